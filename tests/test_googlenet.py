"""The Flax GoogLeNet's structure: names, shapes, Caffe pooling/LRN semantics."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dream_jax import googlenet


def test_parameter_count_matches_published_model():
    shapes = googlenet.param_shapes()
    assert len(shapes) == 58
    assert sum(math.prod(s) for leaves in shapes.values() for s in leaves.values()) == 6_998_552
    assert shapes["conv1/7x7_s2"]["kernel"] == (7, 7, 3, 64)
    assert shapes["loss3/classifier"]["kernel"] == (1024, 1000)


def test_layer_shapes_at_224_are_caffes():
    shapes = googlenet.layer_shapes(224, 224)
    assert shapes["conv1/7x7_s2"] == (112, 112, 64)
    assert shapes["pool1/3x3_s2"] == (56, 56, 64)   # ceil((112-3)/2)+1 = 56 (floor gives 55)
    assert shapes["conv2/norm2"] == (56, 56, 192)
    assert shapes["inception_3b/output"] == (28, 28, 480)
    assert shapes["inception_4c/output"] == (14, 14, 512)
    assert shapes["inception_4e/output"] == (14, 14, 832)
    assert shapes["inception_5b/output"] == (7, 7, 1024)
    assert shapes["pool5/7x7_s1"] == (1, 1, 1024)
    assert shapes["prob"] == (1000,)
    assert list(shapes) == list(googlenet.LAYERS)


def test_too_small_inputs_report_none_instead_of_crashing():
    shapes = googlenet.layer_shapes(40, 40)
    assert shapes["inception_4c/output"] == (2, 2, 512)  # 40->20->10->5->2
    assert shapes["pool5/7x7_s1"] is None and shapes["prob"] is None


@pytest.mark.parametrize("size,window,stride,pad", [(112, 3, 2, 0), (57, 3, 2, 0), (28, 3, 1, 1),
                                                    (13, 3, 2, 0), (9, 3, 1, 1)])
def test_max_pool_rounds_up_like_caffe(size, window, stride, pad):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, size, size + 3, 2)), jnp.float32)
    out = np.asarray(googlenet.max_pool_ceil(x, window, stride, pad))
    expected = math.ceil((size + 2 * pad - window) / stride) + 1
    assert out.shape[1] == expected
    # Every output is the max over its (clamped) window, as in Caffe's loop.
    xn = np.asarray(x)
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            h0, w0 = i * stride - pad, j * stride - pad
            window_vals = xn[0, max(h0, 0):min(h0 + window, size), max(w0, 0):min(w0 + window, size + 3)]
            np.testing.assert_allclose(out[0, i, j], window_vals.max(axis=(0, 1)))


def test_lrn_matches_caffe_formula():
    x = np.random.default_rng(1).normal(scale=30, size=(1, 3, 4, 11)).astype(np.float32)
    out = np.asarray(googlenet.local_response_norm(jnp.asarray(x)))
    expected = np.empty_like(x)
    for c in range(11):
        lo, hi = max(0, c - 2), min(11, c + 3)
        scale = 1.0 + 1e-4 / 5 * (x[..., lo:hi] ** 2).sum(-1)
        expected[..., c] = x[..., c] / scale ** 0.75
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_stops_at_the_deepest_requested_tap():
    """Only the stem's parameters exist: requesting a stem tap must not touch the rest."""
    abstract = googlenet.abstract_params()
    stem = {k: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape), v)
            for k, v in abstract.items() if k.startswith("conv")}
    out = googlenet.apply(stem, jnp.zeros((1, 64, 64, 3)), ("conv2/norm2", "pool1/norm1"))
    assert set(out) == {"conv2/norm2", "pool1/norm1"}
    with pytest.raises(Exception):
        googlenet.apply(stem, jnp.zeros((1, 64, 64, 3)), ("inception_3a/output",))


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match="inception_4c/output"):
        googlenet.apply({}, jnp.zeros((1, 224, 224, 3)), ("inception_9z/output",))


@pytest.mark.parametrize("size,stride,pad", [(57, 2, 0), (28, 1, 1), (112, 2, 0)])
def test_max_pool_gradient_matches_xla_and_goes_to_the_first_max(size, stride, pad):
    from jax import lax
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(1, size, size + 5, 3)), jnp.float32)

    def reference(x):  # XLA's own max-pool, same Caffe padding
        out = googlenet.max_pool_ceil(x, 3, stride, pad)
        pads = [(pad, (o - 1) * stride + 3 - n - pad) for o, n in zip(out.shape[1:3], x.shape[1:3])]
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                                 ((0, 0), *pads, (0, 0)))

    out, vjp = jax.vjp(lambda x: googlenet.max_pool_ceil(x, 3, stride, pad), x)
    cotangent = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    np.testing.assert_allclose(vjp(cotangent)[0], jax.vjp(reference, x)[1](cotangent)[0],
                               atol=1e-5)
    # Ties (a constant image): every output's gradient lands on exactly one input.
    flat = jnp.zeros((1, size, size, 2))
    grad = jax.grad(lambda x: googlenet.max_pool_ceil(x, 3, stride, pad).sum())(flat)
    assert float(grad.sum()) == googlenet.max_pool_ceil(flat, 3, stride, pad).size


@pytest.mark.parametrize("size,kernel,stride,pad", [
    (224, 7, 2, 3), (223, 7, 2, 3), (57, 3, 1, 1), (28, 5, 1, 2), (30, 1, 1, 0)])
def test_conv_gradients_match_xla(size, kernel, stride, pad):
    """conv_nhwc's hand-written input gradient (and the kernel gradient) equal jax's."""
    from jax import lax
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, size, size + 3, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 4, 5)), jnp.float32)
    padding = ((pad, pad), (pad, pad))

    def reference(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

    ours, vjp = jax.vjp(lambda x, w: googlenet.conv_nhwc(x, w, (stride, stride), padding), x, w)
    theirs, reference_vjp = jax.vjp(reference, x, w)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    cotangent = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    for got, want in zip(vjp(cotangent), reference_vjp(cotangent)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
