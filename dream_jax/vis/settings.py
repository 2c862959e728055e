"""What determines a visualisation's pixels, but the channel: one frozen value,
checked once when made, stored with every picture.

Each field carries its help (and its choices, for an enum), so the
visualiser's flags are generated from this class (`dream_jax.flags`), named as
the fields are, as the dream's flags are from DreamConfig.
"""
from __future__ import annotations

import dataclasses
import functools

from dream_jax import objectives, render
from dream_jax.engine import deepdream, optimizers
from dream_jax.errors import UserError
from dream_jax.io import image_io
from dream_jax.model import prerelu
from dream_jax.vis import parameterize, transforms

MIN_SIDE = render.MIN_SIDE
MAX_SIZE = 10_000  # a side of image_io.DEFAULT_MAX_PIXELS: checked before anything is allocated


def _field(default, help: str, choices: tuple[str, ...] | None = None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything but the channel that determines a visualisation's pixels
    (hashable: it is static to jit). Checked when made."""
    layer: str = _field("inception_4c/output", "Layer whose channels to visualise.")
    size: int = _field(128, "Side of each picture, pixels.")
    steps: int = _field(256, "Optimisation steps.")
    param: str = _field("decorrelated", "Image parameterisation.", parameterize.NAMES)
    optimizer: str = _field("adam", f"One of {', '.join(optimizers.OPTIMIZERS)}.")
    learning_rate: float = _field(0.05, "Learning rate.")
    schedule: str = _field("constant", f"One of {', '.join(optimizers.SCHEDULES)}.")
    transforms: str = _field("standard", "Robustness transforms.", transforms.NAMES)
    objective_extra: str = _field(
        "", "Terms added to each channel's objective, e.g. "
        "'-0.05*tv() + 0.5*diversity(inception_4c/output)'.")
    seed: int = _field(0, "Random seed.")
    copies: int = _field(1, "Pictures per channel (differ with diversity).")
    pre_relu: bool = _field(True, "Maximise channels before their ReLU (see prerelu).")

    def __post_init__(self):
        objectives.channel(self.layer, 0)  # unknown layer ("did you mean"), or no channels
        parameterize.get(self.param)
        optimizers.make(self.optimizer, self.learning_rate, self.schedule, max(self.steps, 1))
        transform = transforms.by_name(self.transforms)
        extra = self.extra
        if extra is not None:
            if extra.needs_guide or any(isinstance(t, objectives.InputDistance)
                                        for t in extra.terms):
                raise UserError("objective_extra: guide() and input_distance() compare with an "
                                "input image; a visualisation starts from noise")
        checks = [(self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
                  (MIN_SIDE <= self.size <= MAX_SIZE,
                   f"size must be in {MIN_SIDE}..{MAX_SIZE}, got {self.size}"),
                  (self.copies >= 1, f"copies must be >= 1, got {self.copies}"),
                  (self.copies * self.size ** 2 <= image_io.DEFAULT_MAX_PIXELS,
                   f"{self.copies} copies of {self.size}x{self.size} are over "
                   f"{image_io.DEFAULT_MAX_PIXELS:,} pixels in one call"),
                  (0 <= self.seed <= render.MAX_SEED,
                   f"seed must be in 0..{render.MAX_SEED}, got {self.seed}")]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        h, w = transforms.output_shape(transform, self.size, self.size)
        layers = self.objective(0).layers
        if not deepdream.fits_network(h, w, layers):
            raise UserError(f"size {self.size} is too small for {layers[-1]} "
                            f"(the network sees {w}x{h} after the transforms); use a bigger "
                            f"--size or a shallower layer")

    def objective(self, channel: int) -> objectives.Objective:
        """Item `channel`'s objective in the grammar's terms (for checks and the
        taps it reads); `optimize` takes the channel before its ReLU when
        `uses_pre_relu`."""
        base = objectives.channel(self.layer, channel)
        return base if self.extra is None else base + self.extra

    @functools.cached_property
    def extra(self) -> objectives.Objective | None:
        """`objective_extra` parsed (once per Settings), or None when empty."""
        text = self.objective_extra.strip()
        return objectives.parse(text) if text else None

    @property
    def uses_pre_relu(self) -> bool:
        return self.pre_relu and prerelu.branches(self.layer) is not None
