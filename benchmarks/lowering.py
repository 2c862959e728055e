"""Lower dream_jax's compiled programs for accelerators this machine does not have.

`jax.export` lowers a jitted function for any platform from abstract shapes
alone, so CI (CPU only) can check that every program the GPU or TPU would run
is accepted by that platform's lowering rules: the dream octave (whole and
tiled gradient, both kernel paths), one feature-visualisation run and
classification. A platform that refuses an op fails here, with its name,
instead of on a lent accelerator.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from dream_jax.model import DEFAULT as NET
from dream_jax.model import classify
from dream_jax.engine import deepdream, gradients
from dream_jax import objectives
from dream_jax.vis import visualize
from dream_jax.engine.config import DreamConfig

PLATFORMS = ("cuda", "rocm", "tpu", "cpu")
_SIZE = 96  # big enough for inception_4c, small enough to lower in seconds
_LAYER = "inception_4c/output"


@dataclasses.dataclass(frozen=True)
class Program:
    name: str
    lower: Callable[[tuple[str, ...]], export.Exported]


def _f32(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype), tree)


def _octave(kernels: str, gradient) -> Callable[[tuple[str, ...]], export.Exported]:
    """A dream level for a batch of two images, as `deepdream` compiles it (the
    detail of the level below zoomed on, then the octave's steps): the
    objectives' structure static, their indices and weights bound as data."""
    batch = [objectives.parse(f"{_LAYER} + 0.5*channel({_LAYER},{c})") for c in (3, 7)]
    slots = objectives.slots_of(batch)
    bindings = _abstract(objectives.bind(batch, slots))
    config = deepdream.StepConfig.of(DreamConfig(kernels=kernels))
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    below = (_f32(2, _SIZE * 5 // 7, _SIZE * 5 // 7, 3),) * 2
    args = (NET.abstract_params(), _f32(2, _SIZE, _SIZE, 3), bindings, {},
            jax.ShapeDtypeStruct((2, 2), jnp.uint32), scalar, scalar, below)
    static = dict(terms=slots, gradient=gradient, config=config)
    return lambda platforms: export.export(deepdream.dream_level, platforms=platforms)(
        *args, **static)


def _visualization(kernels: str) -> Callable[[tuple[str, ...]], export.Exported]:
    """One visualisation run of two channels with an image penalty, as
    `visualize.render_channels` compiles it."""
    settings = visualize.Settings(layer="inception_3b/output", size=64, steps=4)
    extra = [objectives.parse("-0.05*tv()")] * 2
    slots = objectives.slots_of(extra)
    args = (NET.abstract_params(), jax.ShapeDtypeStruct((2,), jnp.int32),
            _abstract(objectives.bind(extra, slots)), jax.ShapeDtypeStruct((2, 2), jnp.uint32))
    return lambda platforms: export.export(visualize.optimize, platforms=platforms)(
        *args, terms=slots, settings=settings, kernels=kernels)


def _classification(platforms: tuple[str, ...]) -> export.Exported:
    size = NET.input_size
    return export.export(classify.probabilities, platforms=platforms)(
        NET.abstract_params(), _f32(1, size, size, 3))


def programs() -> list[Program]:
    """Every compiled entry point an accelerator runs, with each static variant."""
    halo, stride = gradients.halo_for(_LAYER)
    tiles = gradients.Tiles(32, halo, stride)
    found = []
    for kernels in ("custom", "native"):
        found.append(Program(f"dream_level[whole,{kernels}]", _octave(kernels, gradients.Whole())))
        found.append(Program(f"dream_level[tiles,{kernels}]", _octave(kernels, tiles)))
        found.append(Program(f"visualize.optimize[{kernels}]", _visualization(kernels)))
    found.append(Program("classify.probabilities", _classification))
    return found


def lower_all(platforms: tuple[str, ...], report: Callable[[str], None] = print,
              to_lower: list[Program] | None = None) -> list[str]:
    """Lower each program (default: all of `programs()`) for each platform, one
    line each through `report`. Returns the failures ("program on platform:
    error"), empty when all lowered."""
    failures = []
    for program in programs() if to_lower is None else to_lower:
        for platform in platforms:
            try:
                exported = program.lower((platform,))
            except Exception as e:  # noqa: BLE001 -- any refusal is the finding
                message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                failures.append(f"{program.name} on {platform}: {message}")
                report(f"FAILED {platform:5s} {program.name}: {message}")
                continue
            size = len(exported.mlir_module_serialized)
            report(f"ok     {platform:5s} {program.name}: StableHLO {size / 1024:.0f} KiB")
    return failures
