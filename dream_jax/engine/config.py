"""The dream's configuration: one frozen value, checked once, stored with every output.

Defaults are the original notebook's. Each field carries its command-line
flag name and help, so the scripts' flags are generated from this class
(`dream_jax.flags`) and a PNG's metadata holds exactly these fields. The fields
marked `step` are what a compiled octave is specialised to: `StepConfig` is
made from them, so the two never drift apart.
"""
from __future__ import annotations

import dataclasses
import math

from dream_jax.model.caffe_ops import KERNELS, resolve_kernels
from dream_jax.engine.optimizers import OPTIMIZERS, SCHEDULES
from dream_jax.errors import UserError

NORMALIZERS = ("mean_abs", "std", "lapnorm")
PRECISIONS = ("float32", "bfloat16")
MAX_OCTAVES = 100  # far beyond any useful pyramid; keeps absurd counts from running for hours
MAX_STEPS = 100_000
MAX_INT = 2**31 - 1  # what jax's int32 arguments (jitter, sizes) hold


def _field(default, flag: str, help: str, choices: tuple[str, ...] | None = None,
           step: bool = False):
    """`step`: a compiled octave is specialised to this field (see StepConfig)."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help,
                                                        "choices": choices, "step": step})


@dataclasses.dataclass(frozen=True)
class DreamConfig:
    """The notebook's knobs plus how to compute them (tiling, dtype, kernels)."""
    octave_n: int = _field(4, "octaves", "Number of octaves (octave_n).")
    octave_scale: float = _field(1.4, "octave_scale", "Size ratio between octaves (> 1).")
    iter_n: int = _field(10, "steps", "Gradient steps per octave (iter_n).")
    step_size: float = _field(1.5, "step_size", "Step size of the normalised ascent.",
                              step=True)
    jitter: int = _field(32, "jitter", "Random roll per step, in pixels.", step=True)
    normalize: str = _field("mean_abs", "normalize",
                            "Gradient normalisation: mean |g| (original), std (TF tutorial) or lapnorm "
                            "(each Laplacian-pyramid band by its RMS: the TF inception5h example).",
                            NORMALIZERS, step=True)
    optimizer: str = _field(
        "normalized", "optimizer", "The update rule on the normalised gradient: DeepDream's "
        "own step (step_size levels), or an optax optimiser at rate --step_size.",
        ("normalized",) + tuple(OPTIMIZERS), step=True)
    schedule: str = _field(
        "constant", "schedule", "How an optax optimiser's rate changes over an octave's "
        "steps.", SCHEDULES, step=True)
    tile_size: int = _field(
        0, "tile_size", "0: the whole image's gradient when it fits --memory_budget, else "
        "tiles; N: tiles of N px. Tiles overlap by the objective's receptive field, so the "
        "result is the same either way (a memory knob).")
    memory_budget: int = _field(
        0, "memory_budget", "MiB the gradients may use (0: from the device's free memory).")
    precision: str = _field(
        "float32", "precision", "The network's compute dtype: bfloat16 is for GPUs/TPUs "
        "(slower on CPU); the image and its updates stay float32.", PRECISIONS, step=True)
    kernels: str = _field(
        "auto", "kernels", "Gradient kernels of the Caffe ops: custom (fast on CPU), native "
        "(jax's own), auto (by backend); $DREAM_JAX_KERNELS sets the default.", KERNELS,
        step=True)

    def __post_init__(self):
        checks = [
            (1 <= self.octave_n <= MAX_OCTAVES,
             f"octave_n (--octaves) must be in 1..{MAX_OCTAVES}, got {self.octave_n}"),
            (math.isfinite(self.octave_scale) and self.octave_scale > 1,
             f"octave_scale must be a finite number > 1, got {self.octave_scale}"),
            (1 <= self.iter_n <= MAX_STEPS,
             f"iter_n (--steps) must be in 1..{MAX_STEPS:,}, got {self.iter_n}"),
            (math.isfinite(self.step_size) and self.step_size > 0,
             f"step_size must be a finite number > 0, got {self.step_size}"),
            (self.jitter >= 0, f"jitter must be >= 0, got {self.jitter}"),
            (self.tile_size == 0 or self.tile_size >= 64,
             f"tile_size must be 0 (automatic) or >= 64, got {self.tile_size}"),
            (self.memory_budget >= 0,
             f"memory_budget must be >= 0 MiB (0: automatic), got {self.memory_budget}"),
            (self.optimizer != "normalized" or self.schedule == "constant",
             f"schedule {self.schedule!r} needs an optax --optimizer (the normalised step has "
             f"a fixed size)"),
        ]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool):
                checks.append((value <= MAX_INT,
                               f"{field.name} must be <= {MAX_INT:,}, got {value:,}"))
        for name in ("normalize", "optimizer", "schedule", "precision", "kernels"):
            choices = DreamConfig.__dataclass_fields__[name].metadata["choices"]
            checks.append((getattr(self, name) in choices,
                           f"{name} must be one of {', '.join(choices)}, "
                           f"got {getattr(self, name)!r}"))
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def replace(self, **changes) -> "DreamConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise UserError(f"unknown config field(s) {sorted(unknown)}; known: "
                            f"{', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, fields: dict) -> "DreamConfig":
        """From stored metadata; fields this version does not know are refused."""
        return cls().replace(**fields)


def _step_config() -> type:
    """DreamConfig's `step` fields, frozen and hashable (static to jit), with
    `kernels` resolved for the backend and `schedule_steps`, a schedule's horizon
    (iter_n; 0 for a constant rate). Made from DreamConfig, already checked, so
    it checks nothing again."""
    names = [f.name for f in dataclasses.fields(DreamConfig) if f.metadata["step"]]

    def of(cls, config: DreamConfig) -> "StepConfig":
        values = {name: getattr(config, name) for name in names}
        values["kernels"] = resolve_kernels(config.kernels)
        horizon = 0 if config.schedule == "constant" else config.iter_n
        return cls(**values, schedule_steps=horizon)

    fields = [(f.name, f.type) for f in dataclasses.fields(DreamConfig) if f.name in names]
    return dataclasses.make_dataclass(
        "StepConfig", [*fields, ("schedule_steps", "int", dataclasses.field(default=0))],
        frozen=True,
        namespace={"of": classmethod(of), "__module__": __name__,
                   "__doc__": "What a compiled octave is specialised to (the steps, octaves "
                   "and sizes are not): see _step_config."})


StepConfig = _step_config()
