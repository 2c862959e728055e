"""Caffe's operations: ceil-mode pooling, LRN, and both gradient paths agreeing."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dream_jax.model import caffe_ops
from dream_jax.errors import UserError

KERNEL_PATHS = ["custom", "native"]


@pytest.mark.parametrize("size,window,stride,pad", [(112, 3, 2, 0), (57, 3, 2, 0), (28, 3, 1, 1),
                                                    (13, 3, 2, 0), (9, 3, 1, 1)])
@pytest.mark.parametrize("kernels", KERNEL_PATHS)
def test_max_pool_rounds_up_like_caffe(size, window, stride, pad, kernels):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, size, size + 3, 2)), jnp.float32)
    out = np.asarray(caffe_ops.max_pool_ceil(x, window, stride, pad, kernels))
    expected = math.ceil((size + 2 * pad - window) / stride) + 1
    assert caffe_ops.pool_size(size, window, stride, pad) == expected
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
    out = np.asarray(caffe_ops.local_response_norm(jnp.asarray(x)))
    expected = np.empty_like(x)
    for c in range(11):
        lo, hi = max(0, c - 2), min(11, c + 3)
        scale = 1.0 + 1e-4 / 5 * (x[..., lo:hi] ** 2).sum(-1)
        expected[..., c] = x[..., c] / scale ** 0.75
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("beta,k", [(0.75, 1.0), (0.6, 2.0)])
def test_lrn_gradient_paths_agree(beta, k):
    """The custom path's hand-written LRN gradient equals jax's own derivative
    (at Caffe's activation scale, where the cross-channel term matters)."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(scale=60, size=(2, 5, 6, 13)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    grads = {}
    for kernels in KERNEL_PATHS:
        out, vjp = jax.vjp(lambda x: caffe_ops.local_response_norm(
            x, alpha=1e-3, beta=beta, k=k, kernels=kernels), x)
        grads[kernels] = (out, vjp(cotangent)[0])
    np.testing.assert_array_equal(grads["custom"][0], grads["native"][0])
    np.testing.assert_allclose(grads["custom"][1], grads["native"][1], rtol=1e-5, atol=1e-6)
    out = grads["native"][0]
    cross = grads["native"][1] - cotangent * out / x  # less the elementwise term g * s ** -beta
    assert float(jnp.abs(cross).max()) > 1e-3  # the window term is not negligible here


@pytest.mark.parametrize("size,stride,pad", [(57, 2, 0), (28, 1, 1), (112, 2, 0)])
def test_max_pool_gradient_paths_agree_and_go_to_one_max(size, stride, pad):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(1, size, size + 5, 3)), jnp.float32)

    def reference(x):  # jax's own gradient of XLA's max-pool
        return caffe_ops.max_pool_ceil(x, 3, stride, pad, "native")

    out, vjp = jax.vjp(lambda x: caffe_ops.max_pool_ceil(x, 3, stride, pad, "custom"), x)
    cotangent = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    np.testing.assert_allclose(vjp(cotangent)[0], jax.vjp(reference, x)[1](cotangent)[0],
                               atol=1e-5)
    # Ties (a constant image): every output's gradient lands on exactly one input.
    flat = jnp.zeros((1, size, size, 2))
    for kernels in KERNEL_PATHS:
        grad = jax.grad(lambda x: caffe_ops.max_pool_ceil(x, 3, stride, pad, kernels).sum())(flat)
        assert float(grad.sum()) == caffe_ops.max_pool_ceil(flat, 3, stride, pad).size


@pytest.mark.parametrize("size,kernel,stride,pad", [
    (224, 7, 2, 3), (223, 7, 2, 3), (57, 3, 1, 1), (28, 5, 1, 2), (30, 1, 1, 0), (9, 1, 1, 1),
    (9, 1, 2, 0)])
def test_conv_relu_gradients_match_xla(size, kernel, stride, pad):
    """The custom path's hand-written gradients of a convolution with its bias and
    ReLU (the input's a convolution, or a matrix product for a 1x1 kernel) equal
    jax's, for the input, the kernel and the bias."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, size, size + 3, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, kernel, 4, 5)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
    padding = ((pad, pad), (pad, pad))

    def reference(x, w, b):
        return jax.nn.relu(lax.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)

    ours, vjp = jax.vjp(lambda x, w, b: caffe_ops.conv_relu(x, w, b, (stride, stride), padding,
                                                            "custom"), x, w, b)
    theirs, reference_vjp = jax.vjp(reference, x, w, b)
    assert 0 < float(jnp.mean(theirs > 0)) < 1  # the ReLU's mask matters
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    cotangent = jnp.asarray(rng.normal(size=ours.shape), jnp.float32)
    for got, want in zip(vjp(cotangent), reference_vjp(cotangent)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_auto_kernels_follow_the_backend_not_the_environment(monkeypatch):
    monkeypatch.setenv("DREAM_JAX_KERNELS", "native")  # the library never reads it
    assert caffe_ops.resolve_kernels("auto", "cpu") == "custom"
    assert caffe_ops.resolve_kernels("auto", "gpu") == "native"
    assert caffe_ops.resolve_kernels("native", "cpu") == "native"
    assert caffe_ops.resolve_kernels("custom", "gpu") == "custom"
    with pytest.raises(UserError, match="kernels"):
        caffe_ops.resolve_kernels("bogus")
