"""The network: GoogLeNet in Flax, its Caffe ops, geometry, preprocessing and weights.

The rest of the library reaches a network only through a `Model` (see
`interface`); this is where architectures are registered, by name.
"""
from __future__ import annotations

from dream_jax.model import googlenet
from dream_jax.model.interface import Blob, Model

MODELS: dict[str, Model] = {model.name: model for model in (googlenet.MODEL,)}
DEFAULT: Model = googlenet.MODEL


def get(name: str) -> Model:
    """The registered model called `name`."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


__all__ = ["Blob", "DEFAULT", "MODELS", "Model", "get"]
