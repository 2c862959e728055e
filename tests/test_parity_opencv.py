"""Independent parity: our Flax GoogLeNet vs OpenCV's Caffe importer.

The .caffemodel is written from the shared per-layer files; OpenCV loads it
with the model zoo's deploy.prototxt, our converter loads it too, and the two
forward passes are compared at several taps on real photos.
"""

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

from dream_jax.model import googlenet, preprocess, weights  # noqa: E402
from dream_jax.model.weights import convert  # noqa: E402

pytestmark = pytest.mark.slow  # parity: full forward passes in two frameworks

BAR = 1e-4
TAPS = ["conv1/7x7_s2", "conv2/norm2", "inception_3b/output", "inception_4c/output",
        "inception_4d/3x3_reduce", "inception_5b/output"]
# OpenCV returns a conv layer's output before its (in-place, separate) ReLU;
# the ReLU layer's name gives the post-ReLU blob that Caffe calls by the conv's name.
OPENCV_NAME = {"conv1/7x7_s2": "conv1/relu_7x7", "inception_4d/3x3_reduce": "inception_4d/relu_3x3_reduce"}


@pytest.fixture(scope="module")
def opencv_net(shared_weights, caffemodel):
    return cv2.dnn.readNetFromCaffe(str(shared_weights / "deploy.prototxt"), str(caffemodel))


@pytest.fixture(scope="module")
def caffemodel_params(caffemodel, shared_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("from_caffemodel")
    convert.convert(str(caffemodel), out, labels=str(shared_weights / "synset_words.txt"),
                    progress=False)
    return weights.load_params(out)


def _photos(shared_data):
    from dream_jax.io import image_io
    yield "sky", image_io.read_image(shared_data / "sky1024px.jpg")[0]
    yield "flowers", image_io.read_image(shared_data / "flowers.jpg")[0]
    yield "chelsea", skimage_data.chelsea()


def _resize(rgb, height, width):
    from PIL import Image
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


@pytest.mark.parametrize("height,width", [(224, 224), (300, 517)])
def test_activations_match_opencv(opencv_net, caffemodel_params, shared_data, height, width):
    taps = TAPS + (["loss3/classifier", "prob"] if (height, width) == (224, 224) else [])
    for name, rgb in _photos(shared_data):
        image = preprocess.to_model(_resize(rgb, height, width))[None]
        opencv_net.setInput(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))
        theirs = opencv_net.forward([OPENCV_NAME.get(t, t) for t in taps])
        ours = googlenet.apply(caffemodel_params, image, taps)
        for tap, reference in zip(taps, theirs):
            mine = np.asarray(ours[tap])
            reference = reference.transpose(0, 2, 3, 1) if reference.ndim == 4 else reference
            reference = reference.reshape(mine.shape)
            error = np.abs(mine - reference).max() / np.abs(reference).max()
            assert error <= BAR, f"{name} {height}x{width} {tap}: relative error {error:.2e}"


def test_both_source_forms_give_the_same_parameters(params, caffemodel_params):
    for layer in params:
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(params[layer][leaf], caffemodel_params[layer][leaf])
