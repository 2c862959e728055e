"""Faithfulness scores: each computed as defined (checked against a per-image
loop over googlenet.apply), and the path check flags an unnatural picture."""
import numpy as np
import pytest
from PIL import Image

from dream_jax.model import googlenet, preprocess
from dream_jax.workbench import scores

LAYER = "inception_3b/output"


@pytest.fixture(scope="module")
def naturals():
    from skimage import data
    out = []
    for photo in (data.chelsea(), data.coffee(), data.astronaut(), data.rocket()):
        for y, x in ((0, 0), (60, 90)):
            piece = photo[y:y + 200, x:x + 200]
            out.append(np.asarray(Image.fromarray(piece).resize((64, 64), Image.BILINEAR)))
    return np.stack(out)


def _one(params, rgb, layer):
    """Activations (H, W, C) of one image, by itself."""
    x = preprocess.to_model(rgb, preprocess.DREAM_MEAN_BGR)[None]
    return np.asarray(googlenet.apply(params, x, (layer,))[layer][0])


def _cos(a, b):
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def test_earlier_layers_come_before():
    assert scores.earlier_layers("inception_3b/output") == ("conv2/3x3", "inception_3a/output")
    assert scores.earlier_layers("inception_4c/3x3", 3) == (
        "inception_3b/output", "inception_4a/output", "inception_4b/output")
    assert scores.earlier_layers("conv1/7x7_s2") == ()


def test_scores_are_computed_as_defined(params, naturals):
    channels = [5, 77, 300]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    pictures = np.stack([naturals[0], naturals[3], noise])
    exemplar_sets = [naturals[[0, 1, 2]], naturals[[3, 4]], naturals[[5, 6]]]
    top = [_one(params, s[0], LAYER)[..., c].max() for s, c in zip(exemplar_sets, channels)]
    randoms = naturals[[7, 1, 4]]
    got = scores.channel_scores(params, LAYER, channels, pictures, top, exemplar_sets, randoms)
    earlier = scores.earlier_layers(LAYER)
    mean = lambda rgb, layer: _one(params, rgb, layer).mean(axis=(0, 1))
    for i, c in enumerate(channels):
        ratio = _one(params, pictures[i], LAYER)[..., c].max() / top[i]
        assert got[i]["activation_ratio"] == pytest.approx(ratio, rel=1e-4)
        own = [mean(p, LAYER)[c] for p in pictures]
        beats = np.mean([own[i] > own[j] for j in range(3) if j != i])
        assert got[i]["beats_share"] == pytest.approx(beats)
        path = np.mean([np.mean([_cos(mean(pictures[i], l), mean(e, l))
                                 for e in exemplar_sets[i]]) for l in earlier])
        base = np.mean([np.mean([_cos(mean(r, l), mean(e, l)) for r in randoms
                                 for e in exemplar_sets[i]]) for l in earlier])
        assert got[i]["path_similarity"] == pytest.approx(path, rel=1e-4)
        assert got[i]["random_similarity"] == pytest.approx(base, rel=1e-4)
    assert got[0]["activation_ratio"] == pytest.approx(1.0, rel=1e-5)  # its own top exemplar
    # pixel noise takes a path natural images do not: the check flags it
    assert got[2]["path_similarity"] < got[2]["random_similarity"]
    assert got[0]["path_similarity"] > got[0]["random_similarity"]  # one of its exemplars


def test_scores_go_into_the_png_and_keep_the_rest(tmp_path):
    from dream_jax.io import image_io
    rgb = np.random.default_rng(1).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    image_io.write_png(tmp_path / "v.png", rgb, None, {"dream_jax": "{}"})
    scores.write_into_png(tmp_path / "v.png", {"activation_ratio": 2.5})
    meta = image_io.read_png_metadata(tmp_path / "v.png")
    assert meta["dream_jax"] == "{}" and '"activation_ratio": 2.5' in meta[scores.METADATA_KEY]
    np.testing.assert_array_equal(image_io.read_image(tmp_path / "v.png")[0], rgb)
