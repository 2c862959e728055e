"""Other GoogLeNet-architecture Caffe models (Places365 & co.): any class count.

The test model is the shared BVLC GoogLeNet with a 365-class `loss3/classifier`
derived from the published one (365 seeded rows of it, plus seeded noise), so
its probabilities are as peaked as a real model's. It is written as a real
.caffemodel, converted like a user's download, and checked against OpenCV's
Caffe importer run on the same file with a 365-output deploy.prototxt.
"""
import json
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from dream_jax.model import classify, googlenet, preprocess, weights
from dream_jax.errors import WeightsError
from dream_jax.model.weights import convert
from tests.caffe_writer import write_net
from tests.conftest import assert_one_line_error, caffe_layers, run_main

skimage_data = pytest.importorskip("skimage.data")

CLASSES = 365
PROB_BAR = 1e-4  # max |Δ probability| against OpenCV's Caffe importer


def _classifier(params, seed=365):
    """(365, 1024) weights and (365,) bias in Caffe's order, derived from BVLC's."""
    rng = np.random.default_rng(seed)
    kernel = np.asarray(params["loss3/classifier"]["kernel"]).T  # (1000, 1024)
    bias = np.asarray(params["loss3/classifier"]["bias"])
    rows = rng.choice(kernel.shape[0], CLASSES, replace=False)
    noise = rng.normal(0, 0.1 * kernel.std(), (CLASSES, kernel.shape[1]))
    return (kernel[rows] + noise).astype(np.float32), bias[rows].astype(np.float32)


def _labels_text(count):
    """The MIT Places categories format: "/c/name index", one line per class."""
    return "".join(f"/{chr(97 + i % 26)}/category_{i:03d} {i}\n" for i in range(count))


@pytest.fixture(scope="module")
def places(params, shared_weights, tmp_path_factory):
    """A 365-class GoogLeNet: .caffemodel, deploy.prototxt and categories file."""
    folder = tmp_path_factory.mktemp("places365")
    layers, types = caffe_layers(params)
    layers["loss3/classifier"] = list(_classifier(params))
    (folder / "googlenet_places365.caffemodel").write_bytes(write_net(layers, types))
    prototxt = (shared_weights / "deploy.prototxt").read_text()
    assert prototxt.count("num_output: 1000") == 1  # loss3/classifier's, the only one
    (folder / "deploy_googlenet_places365.prototxt").write_text(
        prototxt.replace("num_output: 1000", f"num_output: {CLASSES}"))
    (folder / "categories_places365.txt").write_text(_labels_text(CLASSES))
    return folder


def _convert(places, out, *extra, labels="categories_places365.txt"):
    return run_main("convert_weights", f"--source={places / 'googlenet_places365.caffemodel'}",
                    f"--labels={places / labels}", f"--out={out}", *extra)


@pytest.fixture(scope="module")
def places_weights(places, tmp_path_factory):
    """The test model converted by the script, as a user would."""
    out = tmp_path_factory.mktemp("places365_weights")
    proc = _convert(places, out, "--allow_unverified")
    assert proc.returncode == 0, proc.stderr
    assert f"{CLASSES} classes" in proc.stdout
    return out


def test_converts_with_its_own_class_count(places_weights):
    manifest = weights.read_manifest(places_weights)
    assert manifest["num_classes"] == CLASSES == weights.num_classes(places_weights)
    assert manifest["model"] == "googlenet_places365"
    assert manifest["file"] == "googlenet_places365.safetensors"
    assert manifest["licence"] == convert.OTHER_LICENCE
    assert manifest["parameter_count"] == 6_998_552 - 1025 * (1000 - CLASSES)
    params = weights.load_params(places_weights)
    assert params["loss3/classifier"]["kernel"].shape == (1024, CLASSES)
    assert googlenet.num_classes(params) == CLASSES
    labels = weights.load_labels(places_weights)
    assert len(labels) == CLASSES and labels[0] == "category_000" and labels[364] == "category_364"


def test_refused_without_allow_unverified(places, tmp_path):
    proc = _convert(places, tmp_path / "out")
    assert_one_line_error(proc, "do not match the published BVLC GoogLeNet", "365 classes",
                          "--allow_unverified")
    assert not (tmp_path / "out/manifest.json").exists()


@pytest.mark.parametrize("count", [CLASSES - 1, CLASSES + 1, 1000])
def test_labels_with_the_wrong_line_count_are_refused(places, tmp_path, count):
    (places / f"labels_{count}.txt").write_text(_labels_text(count))
    proc = _convert(places, tmp_path / "out", "--allow_unverified", labels=f"labels_{count}.txt")
    assert_one_line_error(proc, f"{count} class labels, expected {CLASSES}")
    assert not (tmp_path / "out/manifest.json").exists()


def test_per_layer_source_takes_the_class_count_too(params, shared_weights, tmp_path):
    """The caffejs per-layer form: the count is the classifier bias file's length."""
    source = tmp_path / "googlenet_places365"
    (source / "weights").mkdir(parents=True)
    for path in (shared_weights / "weights").iterdir():
        if not path.name.startswith("loss3"):
            (source / "weights" / path.name).symlink_to(path)
    kernel, bias = _classifier(params)
    (source / "weights/loss3/classifier_filter.bin").parent.mkdir()
    (source / "weights/loss3/classifier_filter.bin").write_bytes(kernel.astype("<f4").tobytes())
    (source / "weights/loss3/classifier_bias.bin").write_bytes(bias.astype("<f4").tobytes())
    (source / "synset_words.txt").write_text(_labels_text(CLASSES))
    manifest = convert.convert(str(source), tmp_path / "out", expected_content_sha256=None,
                               progress=False)
    assert manifest["num_classes"] == CLASSES
    loaded = weights.load_params(tmp_path / "out")
    np.testing.assert_array_equal(loaded["loss3/classifier"]["kernel"], kernel.T)
    (source / "weights/loss3/classifier_filter.bin").write_bytes(kernel[:-1].tobytes())
    with pytest.raises(WeightsError, match="classifier_filter.bin: .* expected"):
        convert.convert(str(source), tmp_path / "out2", expected_content_sha256=None,
                        progress=False)


def test_loading_checks_the_classifier_against_the_manifest(places_weights, tmp_path):
    copy = shutil.copytree(places_weights, tmp_path / "w")
    manifest = json.loads((copy / "manifest.json").read_text())
    for wrong, message in [(1000, r"loss3/classifier/kernel has shape \(1024, 365\), "
                                   r"expected \(1024, 1000\)"),
                           ("365", "num_classes must be a positive integer")]:
        (copy / "manifest.json").write_text(json.dumps({**manifest, "num_classes": wrong}))
        with pytest.raises(WeightsError, match=message):
            weights.load_params(copy)
    del manifest["num_classes"]  # a manifest without num_classes means 1000 classes
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"expected \(1024, 1000\)"):
        weights.load_params(copy)


def test_old_manifest_without_num_classes_loads_as_1000(weights_dir, tmp_path):
    copy = shutil.copytree(weights_dir, tmp_path / "w")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest.pop("num_classes") == 1000
    assert manifest["file"] == "bvlc_googlenet.safetensors"
    assert manifest["labels"]["file"] == "synset_words.txt"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert googlenet.num_classes(weights.load_params(copy)) == 1000
    assert len(weights.load_labels(copy)) == 1000 and weights.num_classes(copy) == 1000


def test_model_builds_with_the_params_class_count():
    assert googlenet.param_shapes()["loss3/classifier"]["kernel"] == (1024, 1000)
    assert googlenet.param_shapes(CLASSES)["loss3/classifier"]["kernel"] == (1024, CLASSES)
    assert googlenet.layer_shapes(224, 224)["prob"] == (1000,)
    assert googlenet.layer_shapes(224, 224, CLASSES)["prob"] == (CLASSES,)
    shapes = googlenet.abstract_params(CLASSES)
    out = jax.eval_shape(
        lambda p, x: googlenet.apply(p, x, ("loss3/classifier", "prob")), shapes,
        jax.ShapeDtypeStruct((2, 224, 224, 3), np.float32))
    assert out["loss3/classifier"].shape == out["prob"].shape == (2, CLASSES)


def _crop(rgb):
    return preprocess.to_model(classify.center_crop_input(rgb))[None]


def test_classifies_like_opencvs_caffe_importer(places, places_weights, tmp_path):
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromCaffe(str(places / "deploy_googlenet_places365.prototxt"),
                                   str(places / "googlenet_places365.caffemodel"))
    params = weights.load_params(places_weights)
    labels = weights.load_labels(places_weights)
    worst = 0.0
    for name in ("chelsea", "coffee"):
        rgb = getattr(skimage_data, name)()
        image = _crop(rgb)
        net.setInput(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))
        theirs = net.forward("prob").reshape(-1)
        assert theirs.shape == (CLASSES,) and theirs.max() > 0.2  # a peaked, meaningful output
        ours = np.asarray(classify.probabilities(params, image))[0]
        worst = max(worst, float(np.abs(ours - theirs).max()))
        top = classify.classify(params, rgb, labels, top_k=5)
        assert [e["index"] for e in top] == list(np.argsort(-theirs, kind="stable")[:5])
        # the script: this model's labels, in OpenCV's order
        Image.fromarray(rgb).save(tmp_path / f"{name}.png")
        proc = run_main("classify", f"--input={tmp_path / f'{name}.png'}", "--top_k=3",
                        "--json", f"--weights={places_weights}")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert [e["index"] for e in result] == [e["index"] for e in top[:3]]
        assert [e["label"] for e in result] == [f"category_{e['index']:03d}" for e in result]
    print(f"max |Δ prob| vs OpenCV, 365 classes: {worst:.2e}")
    assert worst <= PROB_BAR


def test_classify_top_k_follows_the_class_count(places_weights, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(skimage_data.chelsea()).save(path)
    proc = run_main("classify", f"--input={path}", f"--top_k={CLASSES + 1}",
                    f"--weights={places_weights}")
    assert_one_line_error(proc, f"--top_k={CLASSES + 1}", f"{CLASSES} classes")


def test_class_out_of_range_is_one_line(places_weights, tmp_path):
    out = tmp_path / "out.png"
    proc = run_main("dream", f"--weights={places_weights}", f"--objective=class({CLASSES})",
                    "--noise_size=224", "--octaves=1", "--steps=1", f"--output={out}")
    assert_one_line_error(proc, f"class {CLASSES} out of range", f"{CLASSES} classes")
    assert not out.exists()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.fromarray(skimage_data.chelsea()[:224, :224]).save(inputs / "cat.png")
    proc = run_main("batch_dream", f"--weights={places_weights}", f"--inputs={inputs}",
                    f"--output_dir={tmp_path / 'dreams'}", f"--objective=class({CLASSES})",
                    "--octaves=1", "--steps=1")
    assert_one_line_error(proc, f"class {CLASSES} out of range", f"{CLASSES} classes")
    assert [p.name for p in tmp_path.rglob("*.png")] == ["cat.png"]  # the input, no output


@pytest.mark.slow  # one compiled octave of gradient steps at 224 (~7 s here)
def test_dreams_with_the_last_class(places_weights, tmp_path):
    from dream_jax.io import image_io
    rgb = skimage_data.chelsea()[:224, 100:324]
    Image.fromarray(rgb).save(tmp_path / "cat.png")
    out = tmp_path / "out.png"
    last = CLASSES - 1
    proc = run_main("dream", f"--weights={places_weights}", f"--objective=class({last})",
                    f"--input={tmp_path / 'cat.png'}", "--octaves=1", "--steps=4", "--jitter=0",
                    f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    dreamed = image_io.read_image(out)[0]
    assert dreamed.shape == rgb.shape
    params = weights.load_params(places_weights)
    before, after = (np.asarray(classify.probabilities(params, preprocess.to_model(x)[None]))[0]
                     for x in (rgb, dreamed))
    assert after[last] > before[last], (before[last], after[last])
