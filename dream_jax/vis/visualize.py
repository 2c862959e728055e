"""Feature visualisation: a picture, from noise, that maximises one channel.

Where a dream amplifies whatever a photo already excites, a visualisation asks
what a channel responds to most: start from a near-grey parameterised image
(`parameterize`), and follow the gradient of `channel(layer, c)` (plus any
penalties) with an optax optimiser (`optimizers`), through random
transformations (`transforms`) so the result is robust rather than
adversarial. That is lucid's `render_vis`, with its defaults: decorrelated
Fourier image, Adam at 0.05, the standard transforms.

Many channels run as one batch: every item has its own parameters, key and
optimiser state (vmapped), and all steps run in one jitted `fori_loop` (the
ascent loop dreams use, `engine.loop`), so there is no Python loop over steps
or channels and no host round trip per step. The loop also sums each
picture's |gradient| over the steps: its MaCo transparency map. Batches are
chunked to fit memory (`gradients.gradient_bytes`).

An item's randomness is `fold_in(fold_in(seed, channel), copy)`, so a picture
does not depend on which other channels shared its run, except through batch
terms (diversity) and floating-point order: replay therefore re-runs the
recorded chunk, and on CPU gives the same pixels.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax import __version__, objectives, render
from dream_jax.model import DEFAULT as NET
from dream_jax.model import caffe_ops, prerelu, preprocess, weights
from dream_jax.engine import gradients, loop, optimizers
from dream_jax.io import heatmap, image_io
from dream_jax.vis import parameterize, transforms
from dream_jax.vis.settings import Settings
from dream_jax.io import record as records, replay as replays
from dream_jax.errors import UserError

METADATA_KEY = replays.METADATA_KEY
CONTACT_SHEET = "contact_sheet.png"


def parse_channels(text: str, layer: str) -> tuple[int, ...]:
    """`A:B` (A..B-1, like Python), `A,B,C`, a single `C`, or `all`; each checked."""
    n = NET.channels(layer)
    text = text.strip()
    try:
        if text == "all":
            channels = tuple(range(n))
        elif ":" in text:
            start, stop = (int(p) for p in text.split(":"))
            if start >= stop:
                raise UserError(f"channels {text!r} is empty: A:B means channels A..B-1, A < B")
            channels = tuple(range(start, stop))
        else:
            channels = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise UserError(f"channels {text!r}: expected A:B, a comma list or 'all'") from None
    for c in channels:
        objectives.channel(layer, c)  # one-line "out of range" error
    if len(set(channels)) != len(channels):
        raise UserError(f"channels {text!r} repeats a channel")
    return channels


def to_model_space(rgb01):
    """RGB in [0, 1] -> the network's input (BGR, 0..255, dream mean subtracted)."""
    return NET.to_model(rgb01 * 255.0)


@functools.partial(jax.jit, static_argnames=("terms", "settings", "kernels"))
def optimize(params, channels, weights, keys, *, terms, settings: Settings, kernels: str):
    """Pictures (B, H, W, 3) in [0, 1], item b maximising channel channels[b] of
    settings.layer plus the extra `terms` (slots) with their Bindings `weights`
    (leading axis B), started and transformed from keys[b], and their MaCo
    transparency maps (B, H, W): |d objective / d picture| summed over the steps.
    Channels and the bindings are data: one compilation for any of them. The
    steps run in the ascent loop dreams use (`loop.ascend`)."""
    param = parameterize.get(settings.param)
    transform = transforms.by_name(settings.transforms)
    optimizer = optimizers.make(settings.optimizer, settings.learning_rate, settings.schedule,
                                settings.steps)
    layer = settings.layer
    main_taps = prerelu.source_taps(layer) if settings.uses_pre_relu else (layer,)
    needed = {t.layer for t in terms} | set(main_taps)
    layers = NET.in_order(needed)
    init_keys, step_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    z = jax.vmap(lambda k: jax.tree.map(lambda a: a[0], param.init(k, 1, settings.size))
                 )(init_keys)

    def loss(images, keys):
        x = to_model_space(jax.vmap(transform)(keys, images))
        acts = {**NET.apply(params, x, layers, kernels), objectives.INPUT: x}
        if settings.uses_pre_relu:
            value = jax.vmap(lambda a, c: prerelu.channel_map(params, a, layer, c).mean()
                             )(acts, channels)
        else:
            value = jax.vmap(lambda a, c: jnp.take(a, c, axis=-1).mean())(acts[layer], channels)
        if terms:
            value = value + objectives.evaluate_batch(terms, weights, acts, {})
        return -jnp.sum(value)

    image_of = functools.partial(param.to_image, size=settings.size)
    step = loop.Step(jax.grad(loss), optimizer, image_of=image_of)
    z, transparency = loop.ascend(step, z, step_keys, settings.steps, accumulate=True)
    return image_of(z), transparency


def item_key(seed: int, channel: int, copy: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), channel), copy)


def render_channels(params, settings: Settings, channels, kernels: str = "auto") -> np.ndarray:
    """uint8 pictures (len(channels) * copies, size, size, 3), channel-major, in one call."""
    return render_with_transparency(params, settings, channels, kernels)[0]


def render_with_transparency(params, settings: Settings, channels, kernels: str = "auto"
                             ) -> tuple[np.ndarray, np.ndarray]:
    """The pictures of `render_channels` and their float32 transparency maps
    (N, size, size), in one call. The program is the settings' (less the seed)
    and the extra terms' structure: other channels, seeds and indices inside
    `objective_extra` reuse it."""
    items = [(c, k) for c in channels for k in range(settings.copies)]
    extra = ([objectives.parse(settings.objective_extra)] if settings.objective_extra.strip()
             else [])
    slots = objectives.slots_of(extra)
    bindings = objectives.bind((extra or [objectives.Objective()]) * len(items), slots)
    keys = jnp.stack([item_key(settings.seed, c, k) for c, k in items])
    program = dataclasses.replace(settings, objective_extra="", seed=0, copies=1)
    images, maps = optimize(params, jnp.asarray([c for c, _ in items], jnp.int32),
                            jax.tree.map(jnp.asarray, bindings), keys, terms=slots,
                            settings=program, kernels=caffe_ops.resolve_kernels(kernels))
    return preprocess.to_uint8(np.asarray(images) * 255.0), np.asarray(maps, np.float32)


def chunk_channels(settings: Settings, batch: int = 0, budget: int = 0) -> int:
    """Channels per compiled call: `batch` pictures if given, else as many as
    fit `budget` bytes (0: gradients.default_budget()); copies stay together."""
    if batch < 0:
        raise UserError(f"batch must be >= 0 (0: as many as fit memory), got {batch}")
    if batch == 0:
        h, w = transforms.output_shape(transforms.by_name(settings.transforms),
                                       settings.size, settings.size)
        deepest = settings.objective(0).layers[-1]
        batch = (budget or gradients.default_budget()) // gradients.gradient_bytes(h, w, deepest)
    return max(1, batch // settings.copies)


def file_name(layer: str, channel: int, copy: int = 0, copies: int = 1) -> str:
    suffix = f"_{copy}" if copies > 1 else ""
    return f"{layer.replace('/', '-')}_c{channel}{suffix}.png"


def metadata(settings: Settings, channel: int, copy: int, chunk, kernels: str,
             weights_sha256: str) -> dict[str, str]:
    """PNG text: the settings, this picture's channel/copy, the chunk it ran in
    (replay re-runs it), weights sha256, version. No paths."""
    return replays.png_text(weights_sha256, kernels=kernels, visualization={
        **dataclasses.asdict(settings), "channel": channel, "copy": copy, "chunk": list(chunk)})


def _record_sha(weights_dir) -> str:
    return weights.read_manifest(weights_dir)["sha256"]


def transparency_name(picture: str) -> str:
    """`<stem>_transparency.png` (and `.npy`): the map written beside a picture."""
    return picture[:-len(".png")] + "_transparency.png"


def write_picture(output_dir: Path, image, transparency, settings: Settings, channel: int, copy: int,
           chunk, kernels: str, weights_sha256: str) -> Path:
    """A picture with its record, its transparency map (when given) beside it first."""
    path = output_dir / file_name(settings.layer, channel, copy, settings.copies)
    if transparency is not None:
        heatmap.write_transparency(
            path.with_name(transparency_name(path.name)), image, transparency,
            {"transparency": {"picture": path.name, "layer": settings.layer,
                              "channel": channel, "copy": copy, "steps": settings.steps}})
    image_io.write_png(path, image, None,
                       metadata(settings, channel, copy, chunk, kernels, weights_sha256))
    return path


def run(settings: Settings, channels, output_dir, weights_dir=None, params=None,
        batch: int = 0, kernels: str = "auto", progress=None, transparency: bool = False
        ) -> dict:
    """One PNG per picture in `output_dir` and `contact_sheet.png`; returns a summary.
    With `transparency`, each picture's MaCo map goes beside it first (RGBA
    `transparency_name` and the raw `.npy`), so a picture on disk has its map.
    `progress(done, total)` is called after each chunk."""
    output_dir = render.check_folder(output_dir)
    per_call = chunk_channels(settings, batch)
    sha = _record_sha(weights_dir)
    params = weights.load_params(weights_dir) if params is None else params
    params = jax.device_put(params)
    kernels = caffe_ops.resolve_kernels(kernels)
    written, thumbs, labels = [], [], []
    for chunk in iter_chunks(channels, per_call):
        images, maps = render_with_transparency(params, settings, chunk, kernels)
        for i, (c, k) in enumerate((c, k) for c in chunk for k in range(settings.copies)):
            path = write_picture(output_dir, images[i], maps[i] if transparency else None,
                          settings, c, k, chunk, kernels, sha)
            written.append(path)
            thumbs.append(images[i])
            labels.append(f"c{c}" + (f"/{k}" if settings.copies > 1 else ""))
        if progress:
            progress(len(written) // settings.copies, len(channels))
    sheet = image_io.contact_sheet(thumbs, labels)
    sheet_meta = {METADATA_KEY: json.dumps({"version": __version__, "contact_sheet": {
        "layer": settings.layer, "channels": list(channels), "files": [p.name for p in written]}},
        sort_keys=True)}
    image_io.write_png(output_dir / CONTACT_SHEET, sheet, None, sheet_meta)
    return {"files": written, "contact_sheet": output_dir / CONTACT_SHEET,
            "chunk": min(per_call, len(channels))}


def _record_spec() -> records.Obj:
    """The schema of a visualisation record (see `metadata`)."""
    index = records.Int(0, 2**31 - 1)
    vis = records.fields_spec(Settings, {"channel": index, "copy": index,
                                         "chunk": records.List(index)})
    return replays.spec({"kernels": records.Str(16), "visualization": vis})


def read_record(png) -> dict:
    """The visualisation record stored in a picture written by `run`, checked
    against its schema."""
    record = replays.read(png, "visualization", _record_spec(),
                          f"{png}: not a feature visualisation written by dream_jax "
                          f"(no {METADATA_KEY} visualization metadata)")
    vis = record["visualization"]
    if vis["channel"] not in vis["chunk"]:
        raise UserError(f"{png}: bad dream_jax metadata: channel {vis['channel']} is not in "
                        f"its chunk")
    if vis["copy"] >= vis["copies"]:
        raise UserError(f"{png}: bad dream_jax metadata: copy {vis['copy']} of "
                        f"{vis['copies']}")
    return record


def replay(png, output_dir, weights_dir=None, params=None, transparency: bool = False
           ) -> Path:
    """Re-run the picture stored in `png` (its whole chunk, as recorded) and write
    it under its own name in `output_dir` (with `transparency`, its map beside
    it, as `run` does); returns the path."""
    record = read_record(png)
    output_dir = render.check_folder(output_dir)
    replays.check_replayable(record, _record_sha(weights_dir), "the picture")
    fields = {f.name for f in dataclasses.fields(Settings)}
    vis = record["visualization"]
    settings = Settings(**{k: v for k, v in vis.items() if k in fields})
    kernels = caffe_ops.resolve_kernels(record["kernels"])
    params = weights.load_params(weights_dir) if params is None else params
    chunk = tuple(vis["chunk"])
    for channel in chunk:
        settings.objective(channel)  # every channel in range, before anything runs
    images, maps = render_with_transparency(jax.device_put(params), settings, chunk, kernels)
    index = chunk.index(vis["channel"]) * settings.copies + vis["copy"]
    return write_picture(output_dir, images[index], maps[index] if transparency else None,
                         settings, vis["channel"], vis["copy"], chunk, kernels,
                         record["weights_sha256"])


def channel_means(params, rgb, layer: str, kernels: str = "native") -> np.ndarray:
    """(B, C) mean activation of every channel of `layer` over positions, for RGB
    pictures (uint8 or [0, 1] floats, (B, H, W, 3))."""
    rgb = np.asarray(rgb)
    rgb01 = rgb.astype(np.float32) / (255.0 if rgb.dtype == np.uint8 else 1.0)
    acts = NET.apply(params, jnp.asarray(to_model_space(rgb01)), (layer,), kernels)
    return np.asarray(acts[layer].mean(axis=(1, 2)))


def iter_chunks(channels, per_call: int) -> Iterator[tuple[int, ...]]:
    """`channels` in runs of `per_call` (the last may be shorter)."""
    for start in range(0, len(channels), per_call):
        yield tuple(channels[start:start + per_call])
