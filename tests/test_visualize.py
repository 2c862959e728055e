"""Feature visualisation: bad input is one line, replay gives the same pixels,
pictures drive their own channel, diversity spreads copies of one channel."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dream_jax.model import googlenet, prerelu
from dream_jax.io import image_io
from dream_jax import objectives
from dream_jax.vis import visualize
from dream_jax.errors import UserError
from tests.conftest import assert_one_line_error, run_main

LAYER = "inception_4c/output"


# --- input checking (no weights needed) ---

def test_channel_syntax():
    assert visualize.parse_channels("3:6", LAYER) == (3, 4, 5)
    assert visualize.parse_channels("7, 1,2", LAYER) == (7, 1, 2)
    assert visualize.parse_channels("all", "inception_3a/5x5_reduce") == tuple(range(16))
    for bad, message in [("5:2", "is empty"), ("a:b", "expected A:B"), ("1,1", "repeats"),
                         ("510:514", "channel 512 out of range for inception_4c/output (0..511)")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            visualize.parse_channels(bad, LAYER)


@pytest.mark.parametrize("args, fragments", [
    (["--channels=5:2"], ["channels '5:2' is empty"]),
    (["--layer=inception_4c/outptu"], ["unknown layer", "did you mean 'inception_4c/output'"]),
    (["--channels=0,600"], ["channel 600 out of range"]),
    (["--output_dir={tmp}/plain.png/sub"], ["cannot create output folder"]),
    (["--size=20", "--transforms=none", "--layer=inception_5b/output"], ["too small for"]),
    (["--optimizer=adamx"], ["unknown optimizer 'adamx'; valid: adam"]),
    (["--schedule=linear"], ["unknown schedule"]),
    (["--layer=prob"], ["no spatial channels"]),
    (["--replay={tmp}/plain.png"], ["not a feature visualisation"]),
])
def test_bad_input_is_one_line_and_non_zero(tmp_path, args, fragments):
    image_io.write_png(tmp_path / "plain.png", np.zeros((4, 4, 3), np.uint8))
    args = [a.format(tmp=tmp_path) for a in args]
    if not any(a.startswith("--output_dir") for a in args):
        args.append(f"--output_dir={tmp_path}")
    assert_one_line_error(run_main("visualize", *args, "--weights=/nonexistent"), *fragments)


def test_chunks_fit_the_budget_and_keep_copies_together():
    settings = visualize.Settings(size=64, copies=3)
    per_image = visualize.chunk_channels(settings, batch=1)
    assert per_image == 1  # never zero, even when one channel's copies exceed the batch
    assert visualize.chunk_channels(settings, batch=10) == 3
    one = visualize.chunk_channels(visualize.Settings(size=64), budget=1 << 30)
    bigger = visualize.chunk_channels(visualize.Settings(size=64), budget=4 << 30)
    assert 1 <= one and 3 * one <= bigger <= 5 * one


# --- with the weights ---

def test_pre_relu_map_is_the_channel_before_its_relu(params):
    image = jnp.asarray(np.random.default_rng(0).uniform(-60, 60, (1, 67, 67, 3)), jnp.float32)
    cases = [(LAYER, c) for c in (5, 130, 400, 500)] + [
        ("inception_4c/3x3", 9), ("conv2/3x3", 7), ("conv1/7x7_s2", 3),
        ("inception_4a/output", 480)]
    needed = {tap for layer, _ in cases for tap in (*prerelu.source_taps(layer), layer)}
    acts = {k: v[0] for k, v in googlenet.apply(
        params, image, tuple(n for n in googlenet.LAYERS if n in needed)).items()}
    acts[objectives.INPUT] = image[0]
    cut = 0
    for layer, channel in cases:
        pre = np.asarray(prerelu.channel_map(params, acts, layer, jnp.int32(channel)))
        tap = np.asarray(acts[layer][..., channel])
        np.testing.assert_allclose(np.maximum(pre, 0), tap, atol=1e-3 * max(1, tap.max()))
        cut += pre.min() < 0
    assert cut >= len(cases) // 2  # the ReLU had something to cut, so this was a test
    assert prerelu.branches("pool3/3x3_s2") is None


@pytest.mark.slow
def test_replay_gives_the_same_pixels_and_metadata_has_no_paths(weights_dir, tmp_path):
    out, again = tmp_path / "out", tmp_path / "again"
    out.mkdir(), again.mkdir()
    common = ["--layer=conv2/3x3", "--size=32", "--steps=3", f"--weights={weights_dir}"]
    proc = run_main("visualize", *common, "--channels=4:8", "--batch=2", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["contact_sheet.png"] + [f"conv2-3x3_c{c}.png" for c in (4, 5, 6, 7)]
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] > 2 * 32 and sheet.shape[1] > 2 * 32  # 2x2 grid with labels
    for c in (5, 6):  # one from each chunk ([4, 5] and [6, 7])
        target = out / f"conv2-3x3_c{c}.png"
        text = image_io.read_png_metadata(target)[visualize.METADATA_KEY]
        assert str(tmp_path) not in text and str(weights_dir) not in text
        record = json.loads(text)["visualization"]
        assert (record["channel"], record["layer"], record["steps"]) == (c, "conv2/3x3", 3)
        proc = run_main("visualize", f"--replay={target}", f"--weights={weights_dir}",
                        f"--output_dir={again}")
        assert proc.returncode == 0, proc.stderr
        first, second = (image_io.read_image(p)[0] for p in (target, again / target.name))
        np.testing.assert_array_equal(first, second)
    # and the pictures are not all alike: each channel got its own
    pictures = [image_io.read_image(out / f"conv2-3x3_c{c}.png")[0] for c in (4, 5, 6)]
    assert not np.array_equal(pictures[0], pictures[1])


def test_missing_output_folders_are_created(weights_dir, tmp_path):
    out, again = tmp_path / "new" / "vis", tmp_path / "replayed"
    proc = run_main("visualize", "--layer=conv2/3x3", "--size=32", "--steps=1",
                    "--channels=2", f"--weights={weights_dir}", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "conv2-3x3_c2.png"]
    proc = run_main("visualize", f"--replay={out / 'conv2-3x3_c2.png'}",
                    f"--weights={weights_dir}", f"--output_dir={again}")
    assert proc.returncode == 0, proc.stderr
    assert (again / "conv2-3x3_c2.png").is_file()


def _photo_means(params, shared_data):
    photos = [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR))
              for p in sorted(shared_data.glob("*.jpg"))]
    assert photos, f"no photos in {shared_data}"
    return visualize.channel_means(params, np.stack(photos), LAYER).mean(axis=0)


@pytest.mark.slow
def test_each_picture_maximises_its_own_channel(params, shared_data):
    channels = (0, 150, 400, 450)  # one from each branch of the block: 1x1, 3x3, 5x5, pool
    settings = visualize.Settings(layer=LAYER, size=64, steps=24)
    pictures = visualize.render_channels(jax.device_put(params), settings, channels)
    acts = visualize.channel_means(params, pictures, LAYER)[:, channels]  # (picture, channel)
    own = np.diag(acts)
    photos = _photo_means(params, shared_data)[list(channels)]
    assert (own > 20 * np.maximum(photos, 0.1)).all(), (own, photos)
    others = (acts.sum(axis=0) - own) / (len(channels) - 1)
    assert (own > 3 * others).all(), (own, others)  # diagonal dominance
    assert (acts.argmax(axis=0) == np.arange(len(channels))).all()


@jax.jit
def _gram_similarity(params, pictures):
    acts = googlenet.apply(params, visualize.to_model_space(pictures / 255.0), (DIVERSITY_LAYER,))
    return -objectives.Diversity(DIVERSITY_LAYER).contributions(acts).mean()


DIVERSITY_LAYER = "inception_3b/output"


@pytest.mark.slow
def test_diversity_makes_copies_of_one_channel_differ(params):
    settings = visualize.Settings(layer="inception_4a/output", size=48, steps=16, copies=3,
                                  objective_extra=f"100*diversity({DIVERSITY_LAYER})")
    terms = objectives.parse(settings.objective_extra).terms
    keys = jnp.stack([visualize.item_key(0, 97, k) for k in range(3)])
    params = jax.device_put(params)
    runs = []
    for weight in (0.0, 100.0):  # the weight is data: one compilation for both runs
        pictures, _ = visualize.optimize(params, jnp.full(3, 97), jnp.full((3, 1), weight), keys,
                                         terms=terms, settings=settings, kernels="auto")
        runs.append(np.asarray(pictures) * 255.0)
    plain, diverse = runs
    assert _gram_similarity(params, diverse) < 0.7 * _gram_similarity(params, plain)
    distance = lambda p: np.mean([np.abs(p[i] - p[j]).mean() for i in range(3)
                                  for j in range(i + 1, 3)])
    assert distance(diverse) > distance(plain)


def test_post_relu_objective_raises_live_channels(params):
    """--nopre_relu maximises the ReLU'd channel itself: channels alive on grey go up
    between the first step (Adam's first step is a jump of lr in every coefficient)
    and the sixteenth."""
    layer = "conv2/3x3"
    grey = visualize.channel_means(params, np.full((1, 32, 32, 3), 0.5, np.float32), layer)[0]
    alive = tuple(int(c) for c in np.argsort(grey)[-3:])  # the three most active on grey
    own = []
    for steps in (1, 16):
        settings = visualize.Settings(layer=layer, size=32, steps=steps, pre_relu=False,
                                      transforms="none")
        assert not settings.uses_pre_relu
        pictures = visualize.render_channels(jax.device_put(params), settings, alive)
        own.append(np.diag(visualize.channel_means(params, pictures, layer)[:, alive]))
    assert (own[1] > 1.5 * own[0]).all(), own


# --- transparency: |gradient| accumulated along the optimisation ---

def test_transparency_concentrates_on_a_neurons_receptive_field(params):
    """A neuron at (0.25, 0.25) of conv2/3x3 sees a small patch of the picture: the
    map's mass lies around it, where a whole channel's map spreads everywhere."""
    layer, c = "conv2/3x3", 10
    plain = visualize.Settings(layer=layer, size=64, steps=3, param="pixel", transforms="none")
    neuron = dataclasses.replace(plain, objective_extra=f"1000*neuron({layer},{c},0.25,0.25)")
    shares = []
    for settings in (plain, neuron):
        pictures, maps = visualize.render_with_transparency(jax.device_put(params), settings,
                                                            (c,))
        assert maps.shape == pictures.shape[:3] and maps.dtype == np.float32
        assert (maps >= 0).all() and maps.max() > 0
        shares.append(maps[0, 4:28, 4:28].sum() / maps[0].sum())
    assert shares[1] > 0.9 and shares[0] < 0.5, shares


def test_transparency_is_written_beside_each_picture_and_replayed(weights_dir, tmp_path):
    proc = run_main("visualize", "--layer=inception_3a/output", "--channels=1,4", "--size=32",
                    "--steps=2", "--transparency", f"--output_dir={tmp_path}",
                    f"--weights={weights_dir}")
    assert proc.returncode == 0, proc.stderr
    for c in (1, 4):
        picture = image_io.read_image(tmp_path / f"inception_3a-output_c{c}.png")[0]
        rgb, alpha = image_io.read_image(tmp_path / f"inception_3a-output_c{c}_transparency.png")
        raw = np.load(tmp_path / f"inception_3a-output_c{c}_transparency.npy")
        np.testing.assert_array_equal(rgb, picture)
        assert alpha is not None and alpha.shape == raw.shape == picture.shape[:2]
        assert alpha.max() == 255 and alpha.min() < 255  # it says where, not everywhere
    again = tmp_path / "again"
    proc = run_main("visualize", f"--replay={tmp_path}/inception_3a-output_c4.png",
                    "--transparency", f"--output_dir={again}", f"--weights={weights_dir}")
    assert proc.returncode == 0, proc.stderr
    for name in ("inception_3a-output_c4.png", "inception_3a-output_c4_transparency.png"):
        np.testing.assert_array_equal(image_io.read_image(again / name)[0],
                                      image_io.read_image(tmp_path / name)[0])
    np.testing.assert_array_equal(np.load(again / "inception_3a-output_c4_transparency.npy"),
                                  np.load(tmp_path / "inception_3a-output_c4_transparency.npy"))
