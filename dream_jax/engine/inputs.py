"""From what a caller wants dreamed to what `deepdream.deepdream` takes.

Every way in (the API, a rendered request, a batch, a zoom) goes through
`plan` and `Plan.inputs`, so regions, guide, keys and their checks mean the
same everywhere. An *entry* is what one image dreams: an Objective, or with
K region masks a tuple of K Objectives (objective k where mask k is white).
`plan` does what a whole request shares once (the guide's features, the
masks' checks); `Plan.inputs` makes one batch's arguments (each mask resized
to the batch's images, one key per image).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax import objectives
from dream_jax.engine import deepdream
from dream_jax.io import image_io
from dream_jax.model import DEFAULT as NET
from dream_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class EngineInputs:
    """One batch's arguments of `deepdream.deepdream`, the images still uint8 RGB
    (`api.dream_pixels` takes them to model space and onto the devices)."""
    images: np.ndarray            # uint8 RGB (B, H, W, 3)
    objective_list: list          # one entry per image
    keys: jax.Array               # (B, 2)
    data: dict                    # guide features, see `guide_data`
    masks: np.ndarray | None      # (B, H, W, K) float32 in [0, 1], or None


@dataclasses.dataclass(frozen=True)
class Plan:
    """What every batch of one request shares."""
    data: dict
    masks: tuple[np.ndarray, ...] | None  # (h, w) float32 at the masks' own sizes

    def inputs(self, images: np.ndarray, entries: list, key) -> EngineInputs:
        """The engine's arguments for `images` (B, H, W, 3), one entry each, all
        with PRNG `key` (a key per image: the pixels do not depend on the batch)."""
        images = np.asarray(images)
        if len(entries) != len(images):
            raise UserError(f"{len(images)} images need as many objectives, got {len(entries)}")
        masks = None
        if self.masks is not None:
            resized = _resize(self.masks, *images.shape[1:3])
            masks = np.repeat(resized[None], len(images), axis=0)
        keys = jnp.stack([key] * len(images))
        return EngineInputs(images, list(entries), keys, self.data, masks)


def plan(params, entries: list, guide: np.ndarray | None = None, masks=None) -> Plan:
    """Check `entries` (every entry any batch will dream) against the masks,
    and compute the guide's features once. `masks`: each (h, w) or (h, w, 3),
    uint8 0..255 or float 0..1 (white dreams, black keeps the input)."""
    grey = None if masks is None else tuple(_grey(m) for m in masks)
    for entry in entries:
        if grey is None and isinstance(entry, tuple):
            raise UserError("objectives per region need region masks")
        if grey is not None and (not isinstance(entry, tuple) or len(entry) != len(grey)):
            raise UserError(f"{len(grey)} region mask(s) need as many objectives per image")
    data = guide_data(params, None if guide is None else np.asarray(guide),
                      objectives.union_terms(flatten(entries)))
    return Plan(data, grey)


def flatten(entries: list) -> list:
    """The distinct objectives of `entries`, in order."""
    flat = [o for entry in entries for o in (entry if isinstance(entry, tuple) else (entry,))]
    return list(dict.fromkeys(flat))


def layers(entries: list) -> tuple[str, ...]:
    """The network layers `entries` read, shallowest first."""
    return objectives.layers_of(objectives.union_terms(flatten(entries)))


def guide_data(params, guide_rgb: np.ndarray | None, terms) -> dict:
    """{str(term): guide features (M, C)} for every Guide term, from the guide image
    at its own size (as the original notebook does)."""
    data = {}
    for term in terms:
        if isinstance(term, objectives.Guide):
            if guide_rgb is None:
                raise UserError(f"{term} needs a guide image (--guide)")
            h, w = guide_rgb.shape[:2]
            if not deepdream.fits_network(h, w, (term.layer,)):
                raise UserError(f"guide image {w}x{h} is too small for {term.layer}")
            image = NET.to_model(guide_rgb)[None]
            acts = NET.apply(params, image, (term.layer,))[term.layer]
            data[str(term)] = acts[0].reshape(-1, acts.shape[-1])
    return data


def region_masks(masks, height: int, width: int) -> np.ndarray:
    """Masks (each (h, w) or (h, w, 3), uint8 0..255 or float 0..1: white dreams,
    black keeps) -> (H, W, K) float32 in [0, 1], resized to the image."""
    return _resize([_grey(m) for m in masks], height, width)


def _grey(mask) -> np.ndarray:
    """A mask as (h, w) float32, 1 = white (not yet clipped or resized): uint8
    levels over 255, an RGB mask's channels averaged."""
    mask = np.asarray(mask)
    scale = 255.0 if mask.dtype == np.uint8 else 1.0
    mask = mask.astype(np.float32) / scale
    if mask.ndim == 3:
        mask = mask.mean(axis=-1)
    if mask.ndim != 2 or 0 in mask.shape:
        raise UserError(f"a mask is a 2-D greyscale (or RGB) image, got shape {mask.shape}")
    return mask


def _resize(grey, height: int, width: int) -> np.ndarray:
    out = []
    for mask in grey:
        if mask.shape != (height, width):
            mask = image_io.resize(mask, width, height, "bilinear")
        out.append(np.clip(mask, 0.0, 1.0))
    return np.stack(out, axis=-1)
