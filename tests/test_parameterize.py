"""Image parameterisations: the Fourier image is the spectrum it claims, colour
decorrelation inverts, MaCo's magnitude stays put while its phase moves."""
import jax
import numpy as np
import pytest

from dream_jax.vis import parameterize as P
from dream_jax.errors import UserError


def _single_coefficient(h, w, ky, kx, value, channel=1):
    real = np.zeros((1, 3, h, w // 2 + 1), np.float32)
    real[0, channel, ky, kx] = value
    return {"real": real, "imag": np.zeros_like(real)}


@pytest.mark.parametrize("h, w, ky, kx", [(32, 32, 3, 5), (31, 33, 2, 7), (24, 17, 0, 4)])
def test_one_fourier_coefficient_is_a_sinusoid_scaled_by_one_over_f(h, w, ky, kx):
    """A coefficient a at (ky, kx) (not DC or Nyquist) is 2a/(HW) cos(2pi(ky y/H + kx x/W))
    after irfft2; the 1/f scale (times sqrt(HW)) and lucid's /4 multiply it."""
    a = 0.3
    image = np.asarray(P.fft_to_spatial(_single_coefficient(h, w, ky, kx, a), (h, w)))[0]
    f = np.hypot(ky / h, kx / w)
    amplitude = 2 * a / (h * w) * (np.sqrt(h * w) / f) / 4
    y, x = np.mgrid[:h, :w]
    expected = amplitude * np.cos(2 * np.pi * (ky * y / h + kx * x / w))
    np.testing.assert_allclose(image[..., 1], expected, atol=1e-6 * amplitude * h * w)
    assert np.abs(image[..., [0, 2]]).max() == 0  # other colours untouched
    spectrum = np.abs(np.fft.rfft2(image[..., 1]))
    assert np.unravel_index(spectrum.argmax(), spectrum.shape) == (ky, kx)


def test_equal_coefficients_give_amplitudes_in_ratio_of_inverse_frequency():
    h = w = 64
    low = np.asarray(P.fft_to_spatial(_single_coefficient(h, w, 0, 2, 1.0), h))[0, ..., 1]
    high = np.asarray(P.fft_to_spatial(_single_coefficient(h, w, 0, 8, 1.0), h))[0, ..., 1]
    assert np.ptp(low) / np.ptp(high) == pytest.approx(4.0, rel=1e-3)


def test_spectrum_scale_is_capped_at_the_lowest_frequency():
    scale = P.spectrum_scale(16, 16)
    assert scale[0, 0] == pytest.approx(16 * 16)  # 1 / (1/16) * sqrt(256)
    assert scale[0, 1] == pytest.approx(16 * 16)  # f = 1/16: the cap itself
    assert scale[0, 8] == pytest.approx(16 / 0.5)


def test_colour_decorrelation_inverts_and_matches_the_published_matrix():
    mix = P.COLOR_MIX
    np.testing.assert_allclose(mix @ np.linalg.inv(mix), np.eye(3), atol=1e-6)
    x = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(P.correlate_colors(P.decorrelate_colors(x)), x, atol=1e-4)
    # U sqrt(S) from an SVD: orthogonal columns, up to the published two decimals
    # (the weakest column's entries are 0.02..0.05, so rounding bends it by ~0.1),
    # the strongest (luminance, all positive) normalised to length 1.
    m = P.COLOR_CORRELATION_SVD_SQRT
    norms = np.linalg.norm(m, axis=0)
    cosines = (m.T @ m) / np.outer(norms, norms)
    assert np.abs(cosines - np.eye(3)).max() < 0.15
    assert np.abs(cosines[0, 1:]).max() < 0.02  # the two strong columns: much closer
    assert np.linalg.norm(mix, axis=0).max() == pytest.approx(1.0)
    assert (m[:, 0] > 0).all() and norms[0] == norms.max()


@pytest.mark.parametrize("size", [9, (10, 13)])  # odd and even; small: FFT compiles grow
@pytest.mark.parametrize("name", P.NAMES)
def test_every_parameterisation_gives_rgb_in_unit_range(name, size):
    param = P.get(name)
    image = np.asarray(jax.jit(lambda k: param.to_image(param.init(k, 2, size), size))(
        jax.random.PRNGKey(1)))
    h, w = (size, size) if isinstance(size, int) else size
    assert image.shape == (2, h, w, 3)
    assert image.min() >= 0 and image.max() <= 1 and np.isfinite(image).all()
    assert not np.allclose(image[0], image[1])  # two batch items, two starts


def test_maco_keeps_the_magnitude_while_the_phase_changes():
    h, w = 24, 30
    magnitude = P.power_law_magnitude((h, w))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    free = (slice(None), slice(None), slice(1, w // 2))  # bins whose phase is free
    images = []
    for key in keys:
        phase = P._maco_init(key, 1, (h, w))
        x = np.asarray(P.maco_spatial(phase, magnitude, (h, w)))[0]
        spectrum = np.abs(np.fft.rfft2(np.moveaxis(x, -1, 0)))
        np.testing.assert_allclose(spectrum[free], np.broadcast_to(magnitude, spectrum.shape)[free],
                                   rtol=1e-3, atol=1e-4)
        images.append(x)
    assert np.abs(images[0] - images[1]).max() > 0.1  # new phase, new picture
    # a gradient step moves only the phase: the spectrum is still the magnitude
    maco = P.get("maco", magnitude=magnitude)
    phase = maco.init(keys[0], 1, (h, w))
    step = jax.grad(lambda p: maco.to_image(p, (h, w))[..., 0].mean())(phase)
    moved = np.asarray(P.maco_spatial(phase + 10 * step, magnitude, (h, w)))[0]
    spectrum = np.abs(np.fft.rfft2(np.moveaxis(moved, -1, 0)))
    np.testing.assert_allclose(spectrum[free], np.broadcast_to(magnitude, spectrum.shape)[free],
                               rtol=1e-3, atol=1e-4)


def test_magnitude_from_images_finds_the_photos_spectrum():
    h, w = 32, 48
    y, x = np.mgrid[:h * 2, :w * 2]
    stripes = 0.5 + 0.4 * np.cos(2 * np.pi * 6 * x / (w * 2))  # 6 cycles across
    grey = np.repeat(stripes[..., None], 3, axis=-1).astype(np.float32)
    magnitude = P.magnitude_from_images([grey, (grey * 255).astype(np.uint8)], (h, w))
    assert magnitude.shape == (3, h, w // 2 + 1)
    luminance = magnitude[0]  # grey stripes live in the first principal colour
    assert np.unravel_index(luminance.argmax(), luminance.shape) == (0, 6)
    assert magnitude[0].max() > 10 * magnitude[1:].max()  # columns only nearly orthogonal
    image = P.get("maco", magnitude=magnitude).to_image(
        P._maco_init(jax.random.PRNGKey(0), 1, (h, w)), (h, w))
    assert image.shape == (1, h, w, 3)


def test_bad_names_and_magnitudes_are_user_errors():
    with pytest.raises(UserError, match="valid: pixel, fft, decorrelated, maco"):
        P.get("fourier")
    with pytest.raises(UserError, match="only maco"):
        P.get("fft", magnitude=np.ones((4, 3)))
    with pytest.raises(UserError, match="magnitude has shape"):
        P.get("maco", magnitude=np.ones((4, 3))).to_image(P._maco_init(
            jax.random.PRNGKey(0), 1, 8), 8)
