"""The Caffe operations GoogLeNet needs, with Caffe's exact semantics.

    conv_relu:      NHWC/HWIO convolution (zero padding), bias, ReLU
    max_pool_ceil:  max-pooling whose output size rounds *up* (`pool_size`)
    local_response_norm: cross-channel LRN

Two gradient paths, the same numbers (tested): "native" is jax's own
autodiff; "custom" writes the input gradients of the convolution, the
max-pool and the LRN out by hand in forms XLA:CPU runs fast (see BUILD_NOTES,
"Backend-aware kernels"). `resolve_kernels("auto")` picks per backend (the
scripts take $DREAM_JAX_KERNELS as the default of --kernels: see cli).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dream_jax.errors import UserError

KERNELS = ("auto", "custom", "native")
KERNELS_ENV = "DREAM_JAX_KERNELS"  # read by the scripts (cli), never by the library
# Measured faster with "custom": XLA:CPU. Elsewhere jax's own gradients until
# a measurement says otherwise.
_CUSTOM_BACKENDS = ("cpu",)


def resolve_kernels(kernels: str = "auto", backend: str | None = None) -> str:
    """"custom" or "native": `kernels` itself, or for "auto" the backend's
    measured choice."""
    if kernels not in KERNELS:
        raise UserError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
    if kernels == "auto":
        kernels = "custom" if (backend or jax.default_backend()) in _CUSTOM_BACKENDS else "native"
    return kernels


def pool_size(n, window: int, stride: int, pad: int = 0):
    """Caffe's pooled size: ceil((n + 2 pad - window) / stride) + 1, less one when
    the last window would start inside the padding. Works on ints and traced ints."""
    out = -((window - n - 2 * pad) // stride) + 1
    if pad:
        out = out - ((out - 1) * stride >= n + pad)
    return out


# --- convolution ---

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, strides, padding):
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC)


def _conv_relu(x, kernel, bias, strides, padding):
    """The native path: jax differentiates it (jax.nn.relu's gradient is 0 at 0)."""
    return jax.nn.relu(_conv(x, kernel, strides, padding) + bias)


def _conv_relu_value(x, kernel, bias, strides, padding):
    """The same value in primitives, for the custom path: jax.nn.relu is a jitted
    custom_jvp, which costs tracing, and the hand-written gradient needs neither."""
    y = _conv(x, kernel, strides, padding)
    return lax.max(lax.add(y, lax.broadcast_in_dim(bias, y.shape, (y.ndim - 1,))),
                   lax.full_like(y, 0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_relu_custom(x, kernel, bias, strides, padding):
    return _conv_relu_value(x, kernel, bias, strides, padding)


def _conv_relu_custom_fwd(x, kernel, bias, strides, padding):
    """With symbolic zeros, so that the backward pass knows whether anything
    differentiates the parameters (a dream does not: their gradient is not built)."""
    out = _conv_relu_value(x.value, kernel.value, bias.value, strides, padding)
    wants_params = (True,) if kernel.perturbed or bias.perturbed else ()  # static structure
    return out, (x.value, kernel.value, out, wants_params)


def _conv_relu_custom_bwd(strides, padding, residuals, g):
    """The ReLU's mask, then the input gradient as a convolution with the kernel
    flipped and swapped to HWIO (jax's transpose rule gives HWOI, which XLA:CPU's
    fast convolution library only takes outside loops), or for a 1x1 kernel a
    matrix product with the kernel as it is (no flipped copy: one compiled kernel
    fewer per layer); the parameters' gradients only where they are differentiated.
    One rule for the whole layer: jax would trace the bias and the ReLU's own
    derivatives on every octave."""
    x, kernel, out, wants_params = residuals
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None, None
    g = lax.select(lax.gt(out, lax.full_like(out, 0)), g, lax.full_like(g, 0))
    if kernel.shape[:2] == (1, 1) and strides == (1, 1) and padding == ((0, 0), (0, 0)):
        dx = lax.dot_general(g, kernel[0, 0], (((g.ndim - 1,), (1,)), ((), ())))
    else:
        dx = _conv_input_gradient(x.shape, kernel, strides, padding, g)
    if not wants_params:
        return dx, None, None
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, strides, padding), kernel)
    return dx, kernel_vjp(g)[0], jnp.sum(g, axis=tuple(range(g.ndim - 1)))


def _conv_input_gradient(x_shape, kernel, strides, padding, g):
    flipped = lax.transpose(lax.rev(kernel, (0, 1)), (0, 1, 3, 2))
    pads = []
    for axis, stride, (low, high) in zip((1, 2), strides, padding):
        size = kernel.shape[axis - 1]
        leftover = (x_shape[axis] + low + high - size) % stride  # rows the forward never read
        pads.append((size - 1 - low, size - 1 - high + leftover))
    return lax.conv_general_dilated(g, flipped, (1, 1), pads, lhs_dilation=strides,
                                    dimension_numbers=_NHWC)


_conv_relu_custom.defvjp(_conv_relu_custom_fwd, _conv_relu_custom_bwd, symbolic_zeros=True)


def conv_relu(x, kernel, bias, strides: tuple[int, int],
              padding: tuple[tuple[int, int], ...], kernels: str = "native"):
    """relu(NHWC x HWIO convolution + bias), a Caffe convolution with its in-place
    ReLU; `kernels` picks the gradient path."""
    fn = _conv_relu_custom if kernels == "custom" else _conv_relu
    return fn(x, kernel, bias, tuple(strides), tuple(tuple(p) for p in padding))


# --- max-pooling ---

def _ceil_pads(n: int, window: int, stride: int, pad: int) -> tuple[int, int]:
    """(low, high) -inf padding that makes a VALID pool produce `pool_size` outputs."""
    out = pool_size(n, window, stride, pad)
    return pad, (out - 1) * stride + window - n - pad


def _along(ndim: int, axis: int, low: int, high: int, interior: int = 0):
    """`lax.pad`'s configuration that pads only `axis`."""
    return [(low, high, interior) if a == axis else (0, 0, 0) for a in range(ndim)]


def _window_taps(x, axis: int, window: int, stride: int, pads: tuple[int, int]):
    """The `window` strided views of x (padded with -inf) along one axis."""
    out = (x.shape[axis] + pads[0] + pads[1] - window) // stride + 1
    padded = lax.pad(x, np.array(-np.inf, x.dtype), _along(x.ndim, axis, *pads))
    return [lax.slice_in_dim(padded, offset, offset + (out - 1) * stride + 1, stride, axis)
            for offset in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool_axis(x, axis, window, stride, pads):
    return functools.reduce(lax.max, _window_taps(x, axis, window, stride, pads))


def _max_pool_axis_fwd(x, axis, window, stride, pads):
    result = _max_pool_axis(x, axis, window, stride, pads)
    return result, (x, result)


def _max_pool_axis_bwd(axis, window, stride, pads, residuals, g):
    """Each output's gradient goes to the first input that attains its max (Caffe's
    rule), placed back with an interior-padded `lax.pad`: elementwise work XLA
    fuses, instead of select-and-scatter."""
    x, result = residuals
    out = result.shape[axis]
    zero, zeros = np.zeros((), g.dtype), lax.full_like(g, 0)
    taken = lax.full_like(result, False, bool)
    grad = lax.full_like(x, 0)
    for offset, tap in enumerate(_window_taps(x, axis, window, stride, pads)):
        hit = lax.bitwise_and(lax.eq(tap, result), lax.bitwise_not(taken))
        taken = lax.bitwise_or(taken, hit)
        low = offset - pads[0]
        config = _along(x.ndim, axis, low, x.shape[axis] - low - (out - 1) * stride - 1,
                        stride - 1)
        grad = lax.add(grad, lax.pad(lax.select(hit, g, zeros), zero, config))
    return (grad,)


_max_pool_axis.defvjp(_max_pool_axis_fwd, _max_pool_axis_bwd)


def max_pool_ceil(x: jax.Array, window: int, stride: int, pad: int = 0,
                  kernels: str = "native") -> jax.Array:
    """Caffe max-pooling on NHWC (output size `pool_size`; the right/bottom edge
    gets extra -inf padding). "custom": separable taps with a hand-written
    gradient; "native": `lax.reduce_window` and jax's gradient."""
    h_pads = _ceil_pads(x.shape[1], window, stride, pad)
    w_pads = _ceil_pads(x.shape[2], window, stride, pad)
    if kernels == "custom":
        x = _max_pool_axis(x, 2, window, stride, w_pads)
        return _max_pool_axis(x, 1, window, stride, h_pads)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                             (1, stride, stride, 1), ((0, 0), h_pads, w_pads, (0, 0)))


# --- LRN ---

def _channel_window_sum(v, size: int):
    """Sum over each channel's window of `size` neighbours (zero beyond the ends):
    `size` shifted slices of the padded array, added, which XLA fuses into one loop."""
    channels, half, last = v.shape[-1], size // 2, v.ndim - 1
    padded = lax.pad(v, np.zeros((), v.dtype), _along(v.ndim, last, half, half))
    return functools.reduce(lax.add, [lax.slice_in_dim(padded, i, i + channels, axis=last)
                                      for i in range(size)])


def _lrn_scale(x, size, alpha, k):
    return lax.add(np.asarray(k, x.dtype),
                   lax.mul(np.asarray(alpha / size, x.dtype), _channel_window_sum(lax.mul(x, x), size)))


def _power(scale, beta):
    """scale ** -beta, for Caffe's 0.75 in square roots."""
    if math.isclose(beta, 0.75):
        return lax.mul(lax.rsqrt(scale), lax.rsqrt(lax.sqrt(scale)))
    return scale ** -beta


def _lrn(x, size, alpha, beta, k):
    return lax.mul(x, _power(_lrn_scale(x, size, alpha, k), beta))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn_custom(x, size, alpha, beta, k):
    return _lrn(x, size, alpha, beta, k)


def _lrn_custom_fwd(x, size, alpha, beta, k):
    return _lrn(x, size, alpha, beta, k), x


def _lrn_custom_bwd(size, alpha, beta, k, x, g):
    """d/dx of x * s ** -beta with s = k + alpha/size * window_sum(x^2):
    g * s ** -beta - 2 alpha beta / size * x * window_sum(g * x * s ** (-beta - 1))
    (the window is symmetric), the scale recomputed from x: two loops, where
    jax's own derivative keeps every intermediate."""
    scale = _lrn_scale(x, size, alpha, k)
    power = _power(scale, beta)
    spread = _channel_window_sum(lax.div(lax.mul(lax.mul(g, x), power), scale), size)
    coefficient = np.asarray(2 * alpha * beta / size, x.dtype)
    return (lax.sub(lax.mul(g, power), lax.mul(coefficient, lax.mul(x, spread))),)


_lrn_custom.defvjp(_lrn_custom_fwd, _lrn_custom_bwd)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 1.0, kernels: str = "native"
                        ) -> jax.Array:
    """Caffe's cross-channel LRN: x / (k + alpha/size * sum_window x^2) ** beta.
    "custom": its gradient written out (fewer compiled loops); "native": jax's."""
    fn = _lrn_custom if kernels == "custom" else _lrn
    return fn(x, size, alpha, beta, k)
