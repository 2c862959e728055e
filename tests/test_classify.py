"""Real photos get sensible ImageNet classes, via the library and the script."""
import json

import numpy as np
import pytest

from dream_jax.model import classify, weights
from tests.conftest import assert_one_line_error, run_main

skimage_data = pytest.importorskip("skimage.data")

CAT_CLASSES = set(range(281, 286))          # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {967, 968, 504}            # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def labels(weights_dir):
    return weights.load_labels(weights_dir)


def test_cat_photo_is_a_cat(params, labels):
    top = classify.classify(params, skimage_data.chelsea(), labels, top_k=5)
    assert top[0]["index"] in CAT_CLASSES, top
    assert "cat" in top[0]["label"]


def test_coffee_photo_is_coffee(params, labels):
    top = classify.classify(params, skimage_data.coffee(), labels, top_k=5)
    assert top[0]["index"] in COFFEE_CLASSES, top


def test_flowers_photo_is_a_flower_or_insect(params, labels, shared_data):
    from dream_jax.io import image_io
    top = classify.classify(params, image_io.read_image(shared_data / "flowers.jpg")[0], labels, 3)
    # yellow lady's slipper, daisy; bee and butterflies visit them
    assert top[0]["index"] in {985, 986, 309, 321, 322, 323, 324, 325, 326}, top


def test_224_input_is_untouched_and_others_are_cropped():
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert classify.center_crop_input(rgb) is rgb
    wide = np.zeros((300, 600, 3), np.uint8)
    assert classify.center_crop_input(wide).shape == (224, 224, 3)


def test_script_json_is_exactly_one_sorted_array(weights_dir, tmp_path):
    from PIL import Image
    path = tmp_path / "cat.png"
    Image.fromarray(skimage_data.chelsea()).save(path)
    proc = run_main("classify", f"--input={path}", "--top_k=3", "--json",
                    f"--weights={weights_dir}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, list) and len(result) == 3
    assert [set(e) for e in result] == [{"index", "label", "prob"}] * 3
    assert all(isinstance(e["index"], int) and isinstance(e["label"], str)
               and isinstance(e["prob"], float) for e in result)
    assert [e["prob"] for e in result] == sorted((e["prob"] for e in result), reverse=True)
    assert result[0]["index"] in CAT_CLASSES


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_script_handles_any_image_mode(weights_dir, tmp_path, mode):
    from PIL import Image
    cat = Image.fromarray(skimage_data.chelsea())
    image = cat.convert("L").convert("I;16") if mode == "I;16" else cat.convert(mode)
    path = tmp_path / f"cat.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    proc = run_main("classify", f"--input={path}", "--json", f"--weights={weights_dir}")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 5


def test_script_missing_input_is_one_line(weights_dir, tmp_path):
    proc = run_main("classify", f"--input={tmp_path / 'nope.jpg'}", f"--weights={weights_dir}")
    assert_one_line_error(proc, "nope.jpg", "no such file")
    proc = run_main("classify", f"--input={tmp_path}", f"--weights={weights_dir}")
    assert_one_line_error(proc, "directory")
