"""optax optimisers and schedules by name."""
import jax.numpy as jnp
import optax
import pytest

from dream_jax.engine import optimizers
from dream_jax.errors import UserError


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
def test_every_optimizer_descends_a_quadratic(name):
    optimizer = optimizers.make(name, 0.05, "cosine", steps=50)
    x = jnp.array([1.0, -2.0])
    state = optimizer.init(x)
    for _ in range(50):
        grads = 2 * x  # d/dx |x|^2
        updates, state = optimizer.update(grads, state, x)
        x = optax.apply_updates(x, updates)
    assert float(jnp.sum(x * x)) < 5.0 * 0.9  # started at 5


def test_schedules_have_their_shapes():
    lr, steps = 0.1, 100
    constant = optimizers.learning_rate_schedule("constant", lr, steps)
    cosine = optimizers.learning_rate_schedule("cosine", lr, steps)
    warmup = optimizers.learning_rate_schedule("warmup_cosine", lr, steps)
    exponential = optimizers.learning_rate_schedule("exponential", lr, steps)
    assert float(constant(0)) == float(constant(99)) == pytest.approx(lr)
    assert float(cosine(0)) == pytest.approx(lr) and float(cosine(steps)) == pytest.approx(0)
    assert float(warmup(0)) == 0 and float(warmup(10)) == pytest.approx(lr)
    assert float(warmup(steps)) < 0.01 * lr
    assert float(exponential(steps)) == pytest.approx(lr * optimizers.EXPONENTIAL_END)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UserError, match="valid: adam, adamw, sgd, rmsprop, lamb"):
        optimizers.make("adamm", 0.05)
    with pytest.raises(UserError, match="valid: constant, cosine, warmup_cosine, exponential"):
        optimizers.make("adam", 0.05, "linear")
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UserError, match="learning rate"):
            optimizers.make("adam", bad)
