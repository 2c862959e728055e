"""Robustness transforms: static shapes, one outcome per key, identity at rest."""
import jax
import numpy as np
import pytest

from dream_jax.vis import transforms as T
from dream_jax.errors import UserError

IMAGE = np.random.default_rng(0).random((21, 21, 3)).astype(np.float32)
KEYS = jax.random.split(jax.random.PRNGKey(0), 6)


def test_shapes_pad_grows_jitter_crops_scale_and_rotate_keep():
    cases = [(T.pad(3), (27, 27)), (T.pad(2, "reflect"), (25, 25)), (T.jitter(4), (17, 17)),
             (T.random_scale([0.9, 1.1]), (21, 21)), (T.random_rotate([-5, 5]), (21, 21)),
             (T.compose(T.standard()), (21 + 24 - 8 - 4,) * 2)]
    for transform, shape in cases:
        assert T.output_shape(transform, 21, 21) == shape
        assert jax.jit(transform)(KEYS[0], IMAGE).shape == (*shape, 3)


def test_same_key_same_picture_other_keys_differ_under_vmap():
    transform = jax.jit(jax.vmap(T.compose(T.standard())))
    images = np.broadcast_to(IMAGE, (6, 21, 21, 3))
    first, again = np.asarray(transform(KEYS, images)), np.asarray(transform(KEYS, images))
    np.testing.assert_array_equal(first, again)
    distinct = {first[i].tobytes() for i in range(6)}
    assert len(distinct) >= 5  # 6 keys: (almost surely) 6 different draws


def test_identity_parameters_give_the_identity():
    for transform in (T.pad(0), T.jitter(0), T.random_scale([1.0]), T.random_rotate([0]),
                      T.compose([])):
        np.testing.assert_allclose(jax.jit(transform)(KEYS[1], IMAGE), IMAGE, atol=1e-6)


def test_pads_match_numpy_and_jitter_is_a_window_of_the_picture():
    np.testing.assert_array_equal(T.pad(2, "reflect")(KEYS[0], IMAGE),
                                  np.pad(IMAGE, ((2, 2), (2, 2), (0, 0)), mode="reflect"))
    padded = np.asarray(T.pad(2, "constant", 0.25)(KEYS[0], IMAGE))
    assert (padded[:2] == 0.25).all() and (padded[:, -2:] == 0.25).all()
    window = np.asarray(T.jitter(5)(KEYS[2], IMAGE))
    found = [(dy, dx) for dy in range(6) for dx in range(6)
             if np.array_equal(window, IMAGE[dy:dy + 16, dx:dx + 16])]
    assert len(found) == 1


def test_rotation_by_90_degrees_is_a_quarter_turn_and_scale_keeps_the_centre():
    turned = np.asarray(T.random_rotate([90])(KEYS[0], IMAGE))
    assert any(np.allclose(turned, np.rot90(IMAGE, k), atol=1e-5) for k in (1, -1))
    zoomed = np.asarray(T.random_scale([2.0])(KEYS[0], IMAGE))
    np.testing.assert_allclose(zoomed[10, 10], IMAGE[10, 10], atol=1e-6)
    # x2 about the centre: output pixel 12 reads input 11 (halfway steps land on pixels)
    np.testing.assert_allclose(zoomed[12, 12], IMAGE[11, 11], atol=1e-6)


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="valid: standard, none"):
        T.by_name("lucid")
    with pytest.raises(ValueError, match="pad mode"):
        T.pad(2, "wrap")
