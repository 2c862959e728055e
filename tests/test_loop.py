"""The shared ascent loop: the same variables and transparency map as a plain
Python loop over the steps, the step count is data, and no map costs nothing."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dream_jax.engine import loop
from tests.conftest import compilations

SHAPE = (5, 6, 3)
TARGET = jax.random.normal(jax.random.PRNGKey(1), SHAPE)


def _image_of(z):
    return 2.0 * jnp.tanh(z)  # a differentiable parameterisation, not the identity


def _loss(images, keys):
    noise = jax.vmap(lambda k: jax.random.normal(k, SHAPE))(keys)  # the step's randomness
    return jnp.sum((images - TARGET - 0.3 * noise) ** 2 * jnp.linspace(0.5, 2.0, 3))


STEP = loop.Step(jax.grad(_loss), optax.adam(0.1), lambda z: jnp.clip(z, -1.0, 1.0),
                 _image_of)


def _brute_force(z, keys, steps):
    """The same optimisation written out: one Python iteration per step, the
    variables' gradient taken through the composition, not the loop's vjp."""
    state, total = optax.adam(0.1).init(z), jnp.zeros(z.shape[:-1])
    for i in range(steps):
        step_keys = jnp.stack([jax.random.fold_in(k, i) for k in keys])
        total = total + jnp.abs(jax.grad(_loss)(_image_of(z), step_keys)).sum(-1)
        grads = jax.grad(lambda v, k=step_keys: _loss(_image_of(v), k))(z)
        updates, state = optax.adam(0.1).update(grads, state, z)
        z = jnp.clip(optax.apply_updates(z, updates), -1.0, 1.0)
    return z, total


def test_variables_and_map_are_the_python_loops():
    z0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (2, *SHAPE))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    def ascend_steps(z, keys, steps):
        return loop.ascend(STEP, z, keys, steps, accumulate=True)
    run = jax.jit(ascend_steps)
    with compilations() as compiled:
        for steps in (1, 4):  # the step count is data: one program
            z, total = run(z0, keys, jnp.int32(steps))
            want_z, want_total = _brute_force(z0, keys, steps)
            np.testing.assert_allclose(z, want_z, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(total, want_total, rtol=1e-5, atol=1e-6)
            assert total.shape == (2, 5, 6) and (np.asarray(total) > 0).all()
    assert len([name for name in compiled if "ascend_steps" in name]) == 1


def test_without_a_map_the_variables_are_the_same_and_no_map_is_returned():
    z0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (2, *SHAPE))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    z, total = loop.ascend(STEP, z0, keys, 3)
    assert total is None
    np.testing.assert_allclose(z, loop.ascend(STEP, z0, keys, 3, accumulate=True)[0],
                               rtol=1e-6)


def test_items_do_not_share_optimiser_state():
    """Each item's update sees only its own state: lamb's trust ratio uses the
    norm of the item's variables, so a batch of two gives each item alone."""
    step = STEP._replace(optimizer=optax.lamb(0.1))
    z0 = 0.5 * jax.random.normal(jax.random.PRNGKey(0), (2, *SHAPE))
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    together, _ = loop.ascend(step, z0, keys, 3)
    for i in range(2):
        alone, _ = loop.ascend(step, z0[i:i + 1], keys[i:i + 1], 3)
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-6)


def test_random_offsets_cover_the_closed_range_evenly_and_repeat_per_key():
    keys = jax.random.split(jax.random.PRNGKey(7), 4000)
    offsets = np.asarray(jax.jit(jax.vmap(lambda k: loop.random_offsets(k, -3, 3)))(keys))
    assert offsets.shape == (4000, 2) and offsets.dtype == np.int32
    counts = np.stack([np.bincount(offsets[:, axis] + 3, minlength=7) for axis in (0, 1)])
    assert counts.shape == (2, 7) and counts.min() > 4000 / 7 * 0.8  # every value, about evenly
    assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.1  # dy and dx are not the same draw
    np.testing.assert_array_equal(loop.random_offsets(keys[0], -3, 3),
                                  loop.random_offsets(keys[0], -3, 3))
    assert np.all(np.asarray(loop.random_offsets(keys[0], 0, 0)) == 0)


def test_roll_is_jnp_roll_for_every_shift_within_its_limit():
    """Including a limit beyond the axis (a tiny octave under a large jitter), a
    negative axis and a batch of shifts under vmap, as a dream's step rolls."""
    x = np.arange(2 * 5 * 7 * 3, dtype=np.float32).reshape(2, 5, 7, 3)
    for limit in (2, 9):
        rolled = jax.jit(lambda x, dy, dx, limit=limit: loop.roll(x, (dy, dx), (-3, -2), limit))
        for dy in range(-limit, limit + 1):
            for dx in (-limit, 0, 1, limit):
                np.testing.assert_array_equal(rolled(x, dy, dx), np.roll(x, (dy, dx), (-3, -2)))
    shifts = np.array([[1, -2], [-3, 3]], np.int32)
    got = jax.jit(jax.vmap(lambda image, s: loop.roll(image, (s[0], s[1]), (0, 1), 3)))(x, shifts)
    for image, rolled, s in zip(x, got, shifts):
        np.testing.assert_array_equal(rolled, np.roll(image, tuple(s), (0, 1)))
