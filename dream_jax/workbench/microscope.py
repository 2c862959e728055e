"""A self-hosted microscope: one resumable job from layers + photos to a static site.

Stages, each skipping what a previous (killed) run already wrote, so rerunning
the same command resumes:

  exemplars/       `exemplars.mine` over the inputs (its own state file), and
                   the squared exemplar images the pages show
  vis/<layer>/     `visualize.render_with_transparency`, one vmapped call per
                   chunk of channels, with each picture's transparency map
                   (accumulated while it is optimised)
  attr/<layer>/    each exemplar's attribution for its channel (`attribution`),
                   the K exemplars of a channel in one call
  scores/<layer>.json  `scores.channel_scores`, also written into each
                   visualisation's PNG metadata
  *.html           the pages (`site`), rebuilt from the above every run

Every file is written atomically (temp file, then rename), so a file that
exists is complete, and temp files a killed run left are removed when the
next one starts. A stage's work is split as in an uninterrupted run: the
chunks of channels are planned once (`vis/<layer>/chunks.json`, as memory
allowed then) and a chunk with a missing picture is computed whole, its
missing files written, so a resumed site has the same files and, on CPU, the
same bytes as one made in one go.

Every path in the site is relative to it; the input folder is named INPUTS.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from dream_jax.io import atomic, heatmap, image_io, input_folders
from dream_jax.workbench import attribution, exemplars, scores, site
from dream_jax import objectives, render
from dream_jax.vis import visualize
from dream_jax.model import caffe_ops, weights
from dream_jax.errors import UserError
from dream_jax.workbench.site import attribution_path, image_path, transparency_path, vis_path

JOB_FILE = "microscope.json"
CHUNKS_FILE = "chunks.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything that decides the site's pictures; checked when made."""
    layers: tuple[str, ...]
    channels: str = "0:64"      # per layer: A:B, a comma list or all
    size: int = 128             # visualisation side
    steps: int = 256            # visualisation steps
    top_k: int = 9
    exemplar_size: int = 224
    method: str = "grad_x_input"
    attribution_steps: int = 16
    random_images: int = 8      # natural images the path check compares against
    seed: int = 0

    def __post_init__(self):
        exemplars.Settings(self.layers, self.top_k, self.exemplar_size)
        for layer in self.layers:
            self.settings(layer)
            visualize.parse_channels(self.channels, layer)
        if self.method not in attribution.METHODS:
            raise UserError(f"unknown attribution method {self.method!r}; valid: "
                            f"{', '.join(attribution.METHODS)}")
        if self.random_images < 1:
            raise UserError(f"random_images must be >= 1, got {self.random_images}")

    def settings(self, layer: str) -> visualize.Settings:
        return visualize.Settings(layer=layer, size=self.size, steps=self.steps, seed=self.seed)

    def channel_list(self, layer: str) -> tuple[int, ...]:
        return visualize.parse_channels(self.channels, layer)


def _check_job_file(site_dir: Path, job: Job) -> None:
    """A site is built by one job: a rerun with other settings would mix pictures."""
    path, record = site_dir / JOB_FILE, dataclasses.asdict(job)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != json.loads(json.dumps(record)):
            raise UserError(f"{site_dir} holds a site made with other settings ({old}); "
                            f"use another --output_dir")
        return
    atomic.atomic_write(path, json.dumps(record, indent=1).encode())


def remove_stale_temps(site_dir: Path) -> int:
    """The temp files killed writers left anywhere in the site; returns how many."""
    folders = [site_dir, *(p for p in site_dir.rglob("*") if p.is_dir())]
    return sum(atomic.remove_stale_temps(folder) for folder in folders)


def build(job: Job, input_spec: str, site_dir, weights_dir=None, params=None, devices=None,
          batch: int = 0, batch_size: int = 16, log=print, command: str = "") -> Path:
    """Run (or resume) the job and write the site; returns SITE/index.html."""
    site_dir = render.check_folder(site_dir)
    input_folders.count(input_spec)
    _check_job_file(site_dir, job)
    remove_stale_temps(site_dir)
    sha = weights.read_manifest(weights_dir)["sha256"]
    params = jax.device_put(weights.load_params(weights_dir) if params is None else params)
    ex_dir = site_dir / "exemplars"
    ex_dir.mkdir(exist_ok=True)
    log("mining exemplars")
    record = exemplars.mine(params, input_spec, ex_dir,
                            exemplars.Settings(job.layers, job.top_k, job.exemplar_size),
                            batch_size=batch_size, devices=devices, weights_sha256=sha,
                            log=log)
    record = {k: v for k, v in record.items() if k not in ("seconds", "mining_seconds")}
    root = exemplars.input_root(input_spec)
    _save_exemplar_images(job, record, input_spec, root, site_dir)
    for layer in job.layers:
        log(f"visualising {layer}")
        _visualise(job, layer, site_dir, weights_dir, params, batch, log)
        log(f"attributing the exemplars of {layer}")
        _attribute(job, layer, record, site_dir, params)
        log(f"scoring {layer}")
        _score(job, layer, record, input_spec, site_dir, params)
    return site.write(site_dir, job, record, command)


def _save_exemplar_images(job: Job, record: dict, input_spec: str, root: Path,
                          site_dir: Path) -> None:
    """The squared images of the job's channels' exemplars, as the network saw them."""
    wanted = {e["index"]: e["input"] for layer in job.layers
              for c in job.channel_list(layer)
              for e in record["layers"][layer]["channels"][str(c)]}
    (site_dir / image_path(0)).parent.mkdir(parents=True, exist_ok=True)
    for entry in input_folders.entries(input_spec, [""], Path(".")):
        target = site_dir / image_path(entry.index)
        if entry.index in wanted and not target.exists():
            image_io.write_png(target, exemplars.load_square(entry.input, job.exemplar_size))


def chunk_plan(job: Job, layer: str, site_dir: Path, batch: int) -> list[tuple[int, ...]]:
    """The layer's channels in the chunks they are rendered in: read from
    `vis/<layer>/chunks.json` when a previous run planned them, else planned
    with `batch` (0: as many as fit memory now) and saved there."""
    channels = job.channel_list(layer)
    path = (site_dir / vis_path(layer, 0)).parent / CHUNKS_FILE
    if path.exists():
        try:
            chunks = [tuple(int(c) for c in chunk) for chunk in
                      json.loads(path.read_text())["chunks"]]
        except (OSError, ValueError, KeyError, TypeError):
            chunks = None
        if chunks is None or tuple(c for chunk in chunks for c in chunk) != channels:
            raise UserError(f"{path.relative_to(site_dir)} in the site does not plan the job's "
                            f"channels; delete it and that layer's pictures to start them again")
        return chunks
    per_call = visualize.chunk_channels(job.settings(layer), batch)
    chunks = list(visualize.iter_chunks(channels, per_call))
    atomic.atomic_write(path, json.dumps({"chunks": [list(c) for c in chunks]}).encode())
    return chunks


def _visualise(job: Job, layer: str, site_dir: Path, weights_dir, params, batch, log) -> None:
    """Each planned chunk with a picture or a map missing is rendered whole (a
    picture depends on the chunk it ran in) and only its missing files written."""
    settings = job.settings(layer)
    sha = weights.read_manifest(weights_dir)["sha256"]
    kernels = caffe_ops.resolve_kernels("auto")
    folder = site_dir / vis_path(layer, 0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for chunk in chunk_plan(job, layer, site_dir, batch):
        missing = [c for c in chunk if not ((site_dir / vis_path(layer, c)).exists() and
                                            (site_dir / transparency_path(layer, c)).exists())]
        if not missing:
            log(f"  channels {list(chunk)}: already made")
            continue
        log(f"  channels {list(chunk)}: rendering")
        images, maps = visualize.render_with_transparency(params, settings, chunk, kernels)
        for c, image, values in zip(chunk, images, maps):
            if c in missing:
                visualize.write_picture(folder.parent, image, values, settings, c, 0, chunk,
                                        kernels, sha)


def _attribute(job: Job, layer: str, record: dict, site_dir: Path, params) -> None:
    (site_dir / attribution_path(layer, 0, 0)).parent.mkdir(parents=True, exist_ok=True)
    for c in job.channel_list(layer):
        entries = record["layers"][layer]["channels"][str(c)]
        targets = [site_dir / attribution_path(layer, c, r) for r in range(len(entries))]
        done = [t.exists() for t in targets]
        if all(done):
            continue
        images = np.stack([image_io.read_image(site_dir / image_path(e["index"]))[0]
                           for e in entries])
        objective = objectives.channel(layer, c)
        maps = attribution.attribute_channels(params, images, layer, [c] * len(images),
                                              job.method, job.attribution_steps,
                                              seed=job.seed)
        for target, image, values, entry, exists in zip(targets, images, maps, entries, done):
            if exists:
                continue
            heatmap.write_overlay(target, image, values, {"attribution": {
                "input": Path(image_path(entry["index"])).name, "objective": str(objective),
                "method": job.method, "steps": job.attribution_steps, "seed": job.seed}})


def random_images(job: Job, input_spec: str, total: int) -> np.ndarray:
    """`job.random_images` inputs picked with the job's seed (bad files passed over)."""
    order = np.random.default_rng(job.seed).permutation(total)[:4 * job.random_images]
    picked = {int(i) for i in order}
    found = []
    for entry in input_folders.entries(input_spec, [""], Path(".")):
        if entry.index in picked:
            try:
                found.append((list(order).index(entry.index),
                              exemplars.load_square(entry.input, job.exemplar_size)))
            except UserError:
                continue
    found.sort(key=lambda pair: pair[0])
    if not found:
        raise UserError("no readable input images to compare the visualisations with")
    return np.stack([image for _, image in found[:job.random_images]])


class _Lazy:
    """A sequence whose items are made when read (one channel's exemplars at a time)."""

    def __init__(self, make, length: int):
        self._make, self._length = make, length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):
        return self._make(i)


def _score(job: Job, layer: str, record: dict, input_spec: str, site_dir: Path, params) -> None:
    path = site_dir / site.scores_path(layer)
    if path.exists():
        return
    channels = job.channel_list(layer)
    total = sum(1 for _ in input_folders.entries(input_spec, [""], Path(".")))
    randoms = random_images(job, input_spec, total)
    pictures = np.stack([image_io.read_image(site_dir / vis_path(layer, c))[0] for c in channels])
    entries = [record["layers"][layer]["channels"][str(c)] for c in channels]
    exemplar_images = _Lazy(lambda i: np.stack([
        image_io.read_image(site_dir / image_path(e["index"]))[0] for e in entries[i]]),
        len(entries))
    top = [es[0]["score"] for es in entries]
    results = scores.channel_scores(params, layer, channels, pictures, top, exemplar_images,
                                    randoms)
    for c, result in zip(channels, results):
        scores.write_into_png(site_dir / vis_path(layer, c), result)
    path.parent.mkdir(exist_ok=True)
    atomic.atomic_write(path, json.dumps({str(c): r for c, r in zip(channels, results)},
                                         indent=1, sort_keys=True).encode())
