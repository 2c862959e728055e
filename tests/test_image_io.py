"""Image resampling in one place (io.image_io.resize): uint8 and float pixels, crops."""
import numpy as np
import pytest

from dream_jax.io import image_io


@pytest.fixture
def gradient_rgb():
    y, x = np.mgrid[0:60, 0:80]
    return np.stack([x * 3, y * 4, x + y], axis=-1).astype(np.uint8)  # smooth: no clipping


@pytest.mark.parametrize("method", sorted(image_io.RESIZE_FILTERS))
def test_float_planes_resize_like_their_uint8_pixels(gradient_rgb, method):
    as_uint8 = image_io.resize(gradient_rgb, 37, 23, method).astype(np.float32)
    as_float = image_io.resize(gradient_rgb.astype(np.float32), 37, 23, method)
    assert as_uint8.shape == as_float.shape == (23, 37, 3)
    assert as_float.dtype == np.float32
    assert np.abs(as_uint8 - np.clip(np.round(as_float), 0, 255)).max() <= 1


def test_floats_keep_their_precision():
    mask = np.full((10, 10), 0.3, np.float32)
    assert np.allclose(image_io.resize(mask, 25, 15), 0.3, atol=1e-6)


def test_a_box_resamples_only_that_part_of_the_source(gradient_rgb):
    crop = image_io.resize(gradient_rgb, 40, 30, "bilinear", box=(20, 15, 60, 45))
    assert np.array_equal(crop, gradient_rgb[15:45, 20:60])  # 1:1 box: the pixels themselves
