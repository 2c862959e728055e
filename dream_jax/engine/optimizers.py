"""optax optimisers and learning-rate schedules by name, for flags and metadata.

A name is data: it goes in a PNG's metadata and comes back on replay, which a
GradientTransformation object cannot. Nothing here is new; it is optax's own
constructors behind a short table. The optimisers minimise: feature
visualisation passes minus its objective.
"""
from __future__ import annotations

import optax

from dream_jax.errors import UserError

OPTIMIZERS = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd,
              "rmsprop": optax.rmsprop, "lamb": optax.lamb, "lion": optax.lion,
              "adagrad": optax.adagrad}
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")
WARMUP_FRACTION = 0.1      # warmup_cosine: the first tenth of the steps ramps up
EXPONENTIAL_END = 0.1      # exponential: the rate falls to a tenth by the last step


class OptimizerError(UserError, ValueError):
    """An unknown optimiser or schedule, or a bad learning rate or step count."""


def learning_rate_schedule(name: str, learning_rate: float, steps: int) -> optax.Schedule:
    """The learning rate as a function of the step count."""
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(steps, 1))
    if name == "warmup_cosine":
        warmup = max(1, int(WARMUP_FRACTION * steps))
        return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup,
                                                  max(steps, warmup + 1))
    if name == "exponential":
        return optax.exponential_decay(learning_rate, max(steps, 1), EXPONENTIAL_END)
    raise OptimizerError(f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}")


def make(name: str, learning_rate: float, schedule: str | None = None,
         steps: int = 1) -> optax.GradientTransformation:
    """optax optimiser `name` at `learning_rate`, shaped by `schedule` (None:
    constant) over `steps` steps."""
    if name not in OPTIMIZERS:
        raise OptimizerError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    if not learning_rate > 0 or learning_rate == float("inf"):
        raise OptimizerError(f"learning rate must be a finite number > 0, got {learning_rate}")
    if steps < 1:
        raise OptimizerError(f"steps must be >= 1, got {steps}")
    return OPTIMIZERS[name](learning_rate_schedule(schedule or "constant", learning_rate, steps))
