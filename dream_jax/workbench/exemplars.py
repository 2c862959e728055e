"""Natural exemplars: the real images that drive each channel most.

A folder (or glob, or list file) of any length streams through the network:
each image is resized (shorter side) and centre-cropped to `size` x `size`,
decoded a bounded distance ahead on a reader thread (`stream.Prefetch`), and
every batch is one jitted call that returns, per channel of each layer, the
spatial maximum, the spatial mean and where the maximum is. An exact running
top-k (`topk`) keeps the best `top_k` images per channel by the maximum and,
separately, by the mean. Memory holds one batch, the read-ahead and the
top-k tables, whatever the number of images.

After every batch the state (top-k tables, how far the stream got, the bad
files) is written atomically to `OUTPUT_DIR/exemplars_state.npz`, so a
killed run resumes where the last batch ended and ends with the same result
as an uninterrupted one. At the end, `exemplars.json` lists the exemplars
(names relative to the input root) and each gets its receptive-field patch
(`receptive`) as a PNG; a rerun whose state has not moved keeps them.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import io
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dream_jax.io import atomic, image_io, input_folders, stream
from dream_jax.model import DEFAULT as NET
from dream_jax.model import caffe_ops, receptive
from dream_jax.engine import deepdream, devices as devices_
from dream_jax import objectives, render
from dream_jax.workbench import topk
from dream_jax.errors import UserError

STATE_FILE = "exemplars_state.npz"
RESULT_FILE = "exemplars.json"
PATCH_DIR = "patches"
RANKINGS = ("max", "mean")  # what each top-k ranks by


@dataclasses.dataclass(frozen=True)
class Settings:
    """What decides the result (a resumed run must use the same). Checked when made."""
    layers: tuple[str, ...]
    top_k: int = 9
    size: int = 224

    def __post_init__(self):
        if not self.layers:
            raise UserError("give at least one --layer")
        for layer in self.layers:
            objectives.channel(layer, 0)  # unknown layer, or one without channels
        if len(set(self.layers)) != len(self.layers):
            raise UserError("a layer is given twice")
        if self.top_k < 1:
            raise UserError(f"top_k must be >= 1, got {self.top_k}")
        if self.size < render.MIN_SIDE or not deepdream.fits_network(
                self.size, self.size, self.ordered_layers):
            raise UserError(f"size {self.size} is too small for {self.ordered_layers[-1]}")

    @property
    def ordered_layers(self) -> tuple[str, ...]:
        return NET.in_order(self.layers)


def input_root(spec: str) -> Path:
    """The folder input names are relative to: the folder, the list file's
    folder, or a glob's fixed leading part."""
    path = Path(spec)
    if path.is_dir():
        return path
    if input_folders.is_list_file(spec):
        return path.parent
    fixed = [part for part in path.parts[:-1]]
    for i, part in enumerate(fixed):
        if glob.has_magic(part):
            fixed = fixed[:i]
            break
    return Path(*fixed) if fixed else Path(".")


def relative_name(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB: shorter side resized to `size`, then the centre `size` x `size`."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    resized = image_io.resize(rgb, nw, nh, "bilinear")
    y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(resized[y:y + size, x:x + size])


def load_square(path, size: int, max_pixels: int = image_io.DEFAULT_MAX_PIXELS) -> np.ndarray:
    return square(image_io.read_image(path, max_pixels)[0], size)


@functools.partial(jax.jit, static_argnames=("layers", "kernels"))
def channel_stats(params, images, *, layers: tuple[str, ...], kernels: str = "native"):
    """{layer: (max, mean, argmax)} each (B, C), over the map's positions, for
    images (B, H, W, 3) in model space; argmax is a flat index y * W + x."""
    acts = NET.apply(params, images, layers, kernels)
    stats = {}
    for layer in layers:
        a = acts[layer].reshape(len(images), -1, acts[layer].shape[-1])
        stats[layer] = (a.max(axis=1), a.mean(axis=1), jnp.argmax(a, axis=1))
    return stats


@dataclasses.dataclass
class _Read:
    index: int
    name: str
    rgb: np.ndarray | None = None
    error: str | None = None


def _read(spec: str, root: Path, start: int, size: int, max_pixels: int):
    """Stream entries from `start` on, decoded and squared (on the reader thread)."""
    for entry in input_folders.entries(spec, [""], Path(".")):
        if entry.index < start:
            continue
        name = relative_name(entry.input, root)
        try:
            yield _Read(entry.index, name, rgb=load_square(entry.input, size, max_pixels))
        except UserError as e:  # the message names the file as given: name it relatively
            yield _Read(entry.index, name, error=str(e).replace(str(entry.input), name))


class _State:
    """Top-k tables, how far the stream got, the bad files; saved atomically."""

    def __init__(self, settings: Settings, fingerprint: dict, channels: dict[str, int]):
        self.settings, self.fingerprint = settings, fingerprint
        self.tops = {(layer, r): topk.empty(n, settings.top_k)
                     for layer, n in channels.items() for r in RANKINGS}
        self.next_index, self.images, self.failed, self.names = 0, 0, [], {}

    def save(self, path: Path) -> None:
        keep = topk.indices_in(self.tops.values())
        self.names = {i: n for i, n in self.names.items() if i in keep}
        meta = {"fingerprint": self.fingerprint, "next_index": self.next_index,
                "images": self.images, "failed": self.failed,
                "names": {str(i): n for i, n in self.names.items()}}
        arrays = {f"{layer}|{r}|{f}": v for (layer, r), top in self.tops.items()
                  for f, v in top.items()}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.asarray(json.dumps(meta, sort_keys=True)), **arrays)
        atomic.atomic_write(path, buffer.getvalue())

    def load(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta["fingerprint"] != self.fingerprint:
                    raise UserError(f"{path.name} in the output folder was made with other "
                                    f"settings ({meta['fingerprint']}); use another "
                                    f"--output_dir or delete it")
                for (layer, r), top in self.tops.items():
                    self.tops[layer, r] = {f: data[f"{layer}|{r}|{f}"] for f in top}
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path.name}: unreadable state file ({e}); delete it to "
                            f"start again") from None
        self.next_index, self.images = meta["next_index"], meta["images"]
        self.failed = meta["failed"]
        self.names = {int(i): n for i, n in meta["names"].items()}


def mine(params, input_spec: str, output_dir, settings: Settings, batch_size: int = 16,
         devices=None, kernels: str = "auto", weights_sha256: str = "",
         max_pixels: int = image_io.DEFAULT_MAX_PIXELS, patches: bool = True,
         on_batch=None, log=None) -> dict:
    """Mine the exemplars of `input_spec` into `output_dir`; resumes from its
    state file. Returns the exemplars.json record (plus timing). `on_batch(done)`
    is called after each batch's state is saved."""
    start_time = time.perf_counter()
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    out_dir = render.check_folder(output_dir)
    atomic.remove_stale_temps(out_dir)
    input_folders.count(input_spec)  # none: one-line error
    root = input_root(input_spec)
    chosen = devices if isinstance(devices, list) else devices_.choose(devices)
    size = devices_.padded_size(batch_size, len(chosen))
    kernels = caffe_ops.resolve_kernels(kernels)
    layers = settings.ordered_layers
    shapes = NET.layer_shapes(settings.size, settings.size)
    fingerprint = {"layers": list(layers), "top_k": settings.top_k, "size": settings.size,
                   "weights_sha256": weights_sha256}
    state = _State(settings, fingerprint, {layer: shapes[layer][-1] for layer in layers})
    state_path = out_dir / STATE_FILE
    if state_path.exists():
        state.load(state_path)
    sharding = devices_.batch_sharding(devices_.mesh(chosen)) if len(chosen) > 1 else None
    params = jax.device_put(params, devices_.replicated(devices_.mesh(chosen))
                            if sharding else chosen[0])
    read = stream.Prefetch(_read(input_spec, root, state.next_index, settings.size, max_pixels),
                           size=2 * size)
    pending: list[_Read] = []

    def run_batch(last_index: int) -> None:
        images = np.zeros((size, settings.size, settings.size, 3), np.float32)
        for i, item in enumerate(pending):
            images[i] = NET.to_model(item.rgb)
        batch = jax.device_put(images, sharding) if sharding else images
        stats = channel_stats(params, batch, layers=layers, kernels=kernels)
        indices = [item.index for item in pending] + [-1] * (size - len(pending))
        for layer in layers:
            maximum, mean, pos = (np.asarray(v) for v in stats[layer])
            for ranking, key in zip(RANKINGS, (maximum, mean)):
                state.tops[layer, ranking] = topk.merge(
                    state.tops[layer, ranking], topk.candidates(key, maximum, mean, pos,
                                                                indices))
        state.names.update({item.index: item.name for item in pending})
        state.images += len(pending)
        state.next_index = last_index + 1
        pending.clear()
        state.save(state_path)
        if on_batch:
            on_batch(state.images)

    last = state.next_index - 1
    try:
        for item in read:
            last = item.index
            if item.error:
                state.failed.append({"input": item.name, "error": item.error})
                if log:
                    log(f"skipping: {item.error}")
                continue
            pending.append(item)
            if len(pending) == size:
                run_batch(last)
        if pending or last >= state.next_index:
            if pending:
                run_batch(last)
            else:  # only bad files since the last batch
                state.next_index = last + 1
                state.save(state_path)
    finally:
        read.close()
    mined = time.perf_counter() - start_time
    record = result(state, shapes)
    written = written_result(out_dir, record) if patches else None
    if written is not None:
        record = written
        if log:
            log(f"{RESULT_FILE} and its patches are up to date: kept")
    else:
        if patches:
            write_patches(params, input_spec, root, out_dir, record, settings, max_pixels)
        atomic.atomic_write(out_dir / RESULT_FILE,
                            json.dumps(record, indent=1, sort_keys=True).encode())
    seconds = time.perf_counter() - start_time
    return {**record, "seconds": seconds, "mining_seconds": mined}


def result(state: _State, shapes) -> dict:
    """The exemplars.json record: per layer, per channel, the top entries."""
    layers = {}
    for layer in state.settings.ordered_layers:
        width = shapes[layer][1]
        entry = {"map_size": list(shapes[layer][:2])}
        for ranking, field in zip(RANKINGS, ("channels", "channels_by_mean")):
            top = state.tops[layer, ranking]
            entry[field] = {str(c): [
                {"input": state.names[int(top["index"][c, r])], "index": int(top["index"][c, r]),
                 "score": float(top["max"][c, r]), "mean": float(top["mean"][c, r]),
                 "y": int(top["pos"][c, r]) // width, "x": int(top["pos"][c, r]) % width}
                for r in range(top["key"].shape[1]) if top["index"][c, r] >= 0]
                for c in range(top["key"].shape[0])}
        layers[layer] = entry
    return {"layers": layers, "images": state.images, "failed": state.failed,
            "top_k": state.settings.top_k, "size": state.settings.size}


def written_result(out_dir: Path, record: dict) -> dict | None:
    """The exemplars.json in `out_dir` when it holds `record` (as `result` makes
    it) with every patch written, else None. It is written after its patches,
    so when it holds the state's result, the patches are those of that result."""
    try:
        written = json.loads((out_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    stripped = json.loads(json.dumps(written))
    try:
        for entry in stripped["layers"].values():
            entry.pop("receptive_field")
            for exemplars in entry["channels"].values():
                for e in exemplars:
                    if not (out_dir / e.pop("patch")).is_file():
                        return None
                    e.pop("box")
    except (AttributeError, KeyError, TypeError):
        return None
    return written if stripped == json.loads(json.dumps(record)) else None


def patch_name(layer: str, channel: int, rank: int) -> str:
    return f"{PATCH_DIR}/{layer.replace('/', '-')}/c{channel}_{rank}.png"


def write_patches(params, input_spec: str, root: Path, out_dir: Path, record: dict,
                  settings: Settings, max_pixels: int) -> None:
    """The receptive-field patch of every exemplar (by maximum) as a PNG; adds
    "patch" and "box" (y0, x0, y1, x1 in the squared image) to each entry."""
    fields = {layer: receptive.measure(params, layer, settings.size) for layer in record["layers"]}
    wanted = {e["input"] for entry in record["layers"].values()
              for exemplars in entry["channels"].values() for e in exemplars}
    paths = {name: e.input for e in input_folders.entries(input_spec, [""], Path("."))
             if (name := relative_name(e.input, root)) in wanted}
    cache: dict[str, np.ndarray] = {}
    for layer, entry in record["layers"].items():
        (out_dir / patch_name(layer, 0, 0)).parent.mkdir(parents=True, exist_ok=True)
        entry["receptive_field"] = dataclasses.asdict(fields[layer])
        for channel, exemplars in entry["channels"].items():
            for rank, exemplar in enumerate(exemplars):
                name = exemplar["input"]
                if name not in cache:
                    cache[name] = load_square(paths[name], settings.size, max_pixels)
                y0, x0, y1, x1 = fields[layer].box(exemplar["y"], exemplar["x"])
                exemplar["box"] = [y0, x0, y1, x1]
                exemplar["patch"] = patch_name(layer, int(channel), rank)
                image_io.write_png(out_dir / exemplar["patch"], cache[name][y0:y1, x0:x1])
        if len(cache) > 256:  # bounded: exemplars of later layers are read again
            cache.clear()
