"""Image parameterisations for feature visualisation: what the optimiser moves.

Optimising raw pixels from noise finds high-frequency patterns that excite a
channel but look like noise to us; a change of variables reshapes gradient
descent's steps (Olah et al. 2017, "Feature Visualization"). Each
parameterisation is a pure pair

    init(key, batch, size) -> params     (a pytree with a leading batch axis)
    to_image(params, size) -> (B, H, W, 3) RGB in [0, 1]

chosen by name with `get`. `size` is an int (square) or (height, width); it is
passed to `to_image` too because an rfft2 spectrum does not say whether the
image width was odd or even.

- `pixel`: free pixels through a sigmoid. A sigmoid, not a clip, because a
  clipped pixel has zero gradient, so Adam's iterates can drift past the edge
  and stay there; the sigmoid keeps every pixel movable.
- `fft`: the image's rfft2 coefficients, scaled by 1/f (lucid's `fft_image`):
  scale = 1 / max(f, 1/max(h, w)) ** decay_power, times sqrt(h*w) so the
  inverse transform is unitary, the image divided by 4, then a sigmoid. Equal
  steps on every coefficient then move low frequencies most: the optimiser
  sees a whitened image.
- `decorrelated`: `fft` with the colours decorrelated too (lucid's default):
  the three channels are mixed by the square root of ImageNet's colour
  covariance before the sigmoid.
- `maco`: MaCo (Fel et al. 2023): only the Fourier phase is optimised; the
  magnitude is fixed to a natural-image spectrum, the image standardised, its
  colours recorrelated, then a sigmoid. The paper averages ImageNet's
  amplitude spectrum; without that data set the default here is the natural
  image power law 1/f^decay (decay 1), which is what such an average looks like
  to first order. `magnitude_from_images` computes the paper's kind of spectrum
  from the user's own photos, to pass as `magnitude=`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax.errors import UserError
from dream_jax.io import image_io

# The square root of ImageNet's RGB colour covariance as U * sqrt(S) from its
# SVD (the matrix lucid publishes as `color_correlation_svd_sqrt`): column k is
# the k-th principal colour direction, scaled by its standard deviation.
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]], np.float32)
# Normalised so the strongest direction has unit length (as lucid does), so
# decorrelated and plain parameterisations step at similar scales.
COLOR_MIX = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))

INIT_SD = 0.01     # lucid's: starts every parameterisation near mid-grey
FFT_IMAGE_SCALE = 4.0  # lucid divides the Fourier image by 4 before the sigmoid


class ParamError(UserError, ValueError):
    """An unknown parameterisation or bad parameterisation option."""


class Parameterization(NamedTuple):
    name: str
    init: Callable
    to_image: Callable


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if np.ndim(size) == 0 else tuple(size)
    return int(h), int(w)


def rfft2_freqs(h: int, w: int) -> np.ndarray:
    """|frequency| (cycles per pixel) of each rfft2 coefficient, shape (h, w//2+1)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy).astype(np.float32)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """lucid's 1/f scale, times sqrt(h*w) (unitary inverse): (h, w//2+1)."""
    return (np.sqrt(h * w) / np.maximum(rfft2_freqs(h, w), 1.0 / max(h, w)) ** decay_power
            ).astype(np.float32)


def decorrelate_colors(x):
    """Channels-last "principal colour" coordinates -> RGB offsets (x @ COLOR_MIX.T)."""
    return x @ jnp.asarray(COLOR_MIX).T


def correlate_colors(rgb):
    """Inverse of `decorrelate_colors`: RGB offsets -> principal colour coordinates."""
    return rgb @ jnp.asarray(np.linalg.inv(COLOR_MIX)).T


# --- pixel ---

def _pixel_init(key, batch, size):
    h, w = _hw(size)
    return INIT_SD * jax.random.normal(key, (batch, h, w, 3))


def _pixel_image(params, size):
    return jax.nn.sigmoid(params)


# --- Fourier ---

def _fft_init(key, batch, size):
    h, w = _hw(size)
    real, imag = INIT_SD * jax.random.normal(key, (2, batch, 3, h, w // 2 + 1))
    return {"real": real, "imag": imag}


def fft_to_spatial(params, size, decay_power: float = 1.0):
    """The Fourier parameters as an unbounded image (B, H, W, 3), before any sigmoid."""
    h, w = _hw(size)
    spectrum = (params["real"] + 1j * params["imag"]) * spectrum_scale(h, w, decay_power)
    planes = jnp.fft.irfft2(spectrum, s=(h, w))  # (B, 3, H, W)
    return jnp.moveaxis(planes, 1, -1) / FFT_IMAGE_SCALE


def _fft_image(params, size):
    return jax.nn.sigmoid(fft_to_spatial(params, size))


def _decorrelated_image(params, size):
    return jax.nn.sigmoid(decorrelate_colors(fft_to_spatial(params, size)))


# --- MaCo ---

def power_law_magnitude(size, decay_power: float = 1.0) -> np.ndarray:
    """1/f^decay amplitude spectrum (h, w//2+1), DC set to 0 (standardised away)."""
    h, w = _hw(size)
    magnitude = 1.0 / np.maximum(rfft2_freqs(h, w), 1.0 / max(h, w)) ** decay_power
    magnitude[0, 0] = 0.0
    return magnitude.astype(np.float32)


def magnitude_from_images(images, size) -> np.ndarray:
    """Mean amplitude spectrum (3, h, w//2+1) of RGB images (uint8 or [0,1]
    floats, any sizes), each resized to `size` with bilinear filtering and
    taken in principal-colour coordinates (MaCo's spectrum is of the
    decorrelated image). Pass it as `get("maco", magnitude=...)`."""
    h, w = _hw(size)
    spectra = []
    for image in images:
        image = np.asarray(image)
        image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        planes = image_io.resize(image[..., :3], w, h, "bilinear")
        coords = np.asarray(correlate_colors(planes - 0.5))
        spectra.append(np.abs(np.fft.rfft2(np.moveaxis(coords, -1, 0))))
    if not spectra:
        raise ParamError("magnitude_from_images needs at least one image")
    magnitude = np.mean(spectra, axis=0).astype(np.float32)
    magnitude[:, 0, 0] = 0.0
    return magnitude


def _maco_init(key, batch, size):
    h, w = _hw(size)
    return jax.random.uniform(key, (batch, 3, h, w // 2 + 1), minval=-np.pi, maxval=np.pi)


def maco_spatial(phase, magnitude, size):
    """irfft2(magnitude * exp(i phase)) as (B, H, W, 3), before standardising."""
    h, w = _hw(size)
    planes = jnp.fft.irfft2(magnitude * jnp.exp(1j * phase), s=(h, w))
    return jnp.moveaxis(planes, 1, -1)


def _maco(magnitude):
    def to_image(phase, size):
        h, w = _hw(size)
        m = power_law_magnitude((h, w)) if magnitude is None else np.asarray(magnitude, np.float32)
        if m.shape[-2:] != (h, w // 2 + 1):
            raise ParamError(f"maco magnitude has shape {m.shape}, a {w}x{h} image needs "
                             f"(..., {h}, {w // 2 + 1})")
        x = maco_spatial(phase, m, (h, w))
        axes = (1, 2, 3)  # one mean and std per image: the magnitude sets only the shape
        x = (x - x.mean(axes, keepdims=True)) / (x.std(axes, keepdims=True) + 1e-6)
        return jax.nn.sigmoid(decorrelate_colors(x))
    return to_image


def get(name: str, magnitude=None) -> Parameterization:
    """The parameterisation called `name`; `magnitude` is MaCo's fixed spectrum."""
    makers = {"pixel": (_pixel_init, _pixel_image), "fft": (_fft_init, _fft_image),
              "decorrelated": (_fft_init, _decorrelated_image),
              "maco": (_maco_init, _maco(magnitude))}
    if name not in makers:
        raise ParamError(f"unknown parameterisation {name!r}; valid: {', '.join(NAMES)}")
    if magnitude is not None and name != "maco":
        raise ParamError(f"only maco takes a magnitude spectrum, not {name!r}")
    return Parameterization(name, *makers[name])


NAMES = ("pixel", "fft", "decorrelated", "maco")
