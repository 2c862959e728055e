"""Dreaming a folder of images: grouped by size, one compiled call per batch,
resumable after any crash.

Every output is written atomically, so after a SIGKILL an output either exists
complete or not at all; a rerun skips the complete ones and removes stale temp
files. Ctrl-C stops between batches and still writes the summary. An output
that cannot be written (disk full, folder gone) stops the run with one error:
every later write would fail the same way, and what is written stays. Per-image
PRNG keys depend only on the seed, so a batched output is identical to the
same image dreamed alone (and `scripts/dream.py --replay` reproduces it).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dream_jax import api, atomic, image_io, objectives, render, weights
from dream_jax.errors import ImageError, UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
SUMMARY_FILE = "batch_summary.json"


def collect_inputs(spec: str) -> list[Path]:
    """A folder (its image files) or a glob pattern, sorted."""
    if Path(spec).is_dir():
        found = [p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    else:
        found = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
    if not found:
        raise UserError(f"no input images match {spec}")
    return sorted(found)


class OutputError(UserError):
    """An output could not be written: the run stops (the next ones would fail too)."""


@dataclasses.dataclass
class Job:
    input: Path
    objective: str
    output: Path


def plan(inputs: list[Path], objective_texts: list[str], output_dir: Path) -> list[Job]:
    """One job per (input, objective); output names stay unique when stems collide."""
    stems = defaultdict(int)
    for path in inputs:
        stems[path.stem] += 1
    jobs = []
    for path in inputs:
        name = path.stem if stems[path.stem] == 1 else path.name
        for k, text in enumerate(objective_texts):
            suffix = f"__obj{k}" if len(objective_texts) > 1 else ""
            jobs.append(Job(path, text, output_dir / f"{name}{suffix}.png"))
    return jobs


def split_objectives(text: str) -> list[str]:
    """';'-separated objectives, each dreamed on every input."""
    texts = [t.strip() for t in text.split(";") if t.strip()]
    if not texts:
        raise UserError("empty objective")
    return texts


def run_batch(input_spec: str, output_dir: str, request: render.DreamRequest,
              batch_size: int = 8, weights_dir=None, progress: bool = True, log=print,
              objective_texts: list[str] | None = None) -> dict:
    """Dream every input with `request` under each of `objective_texts` (default:
    the request's own objective)."""
    start = time.perf_counter()
    texts = objective_texts or [request.objective]
    for text in texts:
        dataclasses.replace(request, objective=text)  # checked when made
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    out_dir = Path(output_dir)
    if Path(input_spec).is_dir() and out_dir.resolve() == Path(input_spec).resolve():
        raise UserError(f"output folder {out_dir} is the input folder: outputs would be "
                        f"taken as inputs on the next run; choose another --output_dir")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    render.check_folder(out_dir)
    atomic.remove_stale_temps(out_dir)
    jobs = plan(collect_inputs(input_spec), texts, out_dir)
    pending = [job for job in jobs if not job.output.exists()]
    summary = {"done": 0, "skipped": len(jobs) - len(pending), "failed": [], "interrupted": False}
    all_terms = objectives.union_terms([objectives.parse(t) for t in texts])
    layers = objectives.layers_of(all_terms)
    try:  # from here on, Ctrl-C still leaves a summary
        shapes = {}  # sizes first; pixels are decoded again per batch, to bound memory
        for path in dict.fromkeys(job.input for job in pending):
            try:
                rgb, _ = render.fit_max_side(*image_io.read_image(path, request.max_pixels),
                                             request.max_side)
                render.check_size(str(path), *rgb.shape[:2], request.config, layers)
                shapes[path] = rgb.shape[:2]
            except UserError as e:
                summary["failed"].append(str(e))
                log(f"skipping: {e}", file=sys.stderr)
        groups = defaultdict(list)
        for job in pending:
            if job.input in shapes:
                groups[shapes[job.input]].append(job)
        if groups:  # else nothing is left to dream, and the weights are not even read
            _dream_groups(groups, request, all_terms, batch_size, weights_dir, progress,
                          summary, log)
    except KeyboardInterrupt:
        summary["interrupted"] = True
    finally:
        summary["seconds"] = round(time.perf_counter() - start, 3)
        summary_error = _write_summary(out_dir / SUMMARY_FILE, summary)
    if summary_error:  # only reached when nothing else went wrong first
        raise summary_error
    return summary


def _dream_groups(groups: dict, request: render.DreamRequest, all_terms: tuple,
                  batch_size: int, weights_dir, progress: bool, summary: dict, log) -> None:
    """Load the weights and dream every same-size group, `batch_size` at a time."""
    manifest = weights.read_manifest(weights_dir)
    params = weights.load_params(weights_dir)
    guide_rgb = (image_io.read_image(request.guide, request.max_pixels)[0]
                 if request.guide else None)
    data = api.guide_data(params, guide_rgb, all_terms)
    with tqdm(total=sum(map(len, groups.values())), unit="image", desc="batch",
              disable=None if progress else True) as bar:  # None: only on a terminal
        for shape, group in groups.items():
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                try:
                    _dream_chunk(chunk, request, params, data, manifest["sha256"])
                except OutputError:
                    raise
                except UserError as e:  # e.g. an input changed or vanished since the scan
                    summary["failed"].extend(f"{job.input}: {e}" for job in chunk)
                    log(f"skipping {len(chunk)} image(s) of size {shape[1]}x{shape[0]}: {e}",
                        file=sys.stderr)
                    continue
                summary["done"] += len(chunk)
                bar.update(len(chunk))


def _write_summary(path: Path, summary: dict) -> UserError | None:
    """Write the summary; a failure is returned, not raised, so that it never
    hides the error that stopped the run."""
    try:
        atomic.atomic_write(path, (json.dumps(summary, indent=2) + "\n").encode())
    except OSError as e:
        return UserError(f"{path}: cannot write the batch summary ({e.strerror or e})")
    return None


def _dream_chunk(chunk: list[Job], request: render.DreamRequest, params, data,
                 weights_sha256: str) -> None:
    """One compiled octave loop for a same-size chunk, then one atomic PNG per job."""
    pixels = [render.fit_max_side(*image_io.read_image(job.input, request.max_pixels),
                                  request.max_side) for job in chunk]
    images = np.stack([rgb for rgb, _ in pixels])
    per_item = [objectives.parse(job.objective) for job in chunk]
    keys = jnp.stack([jax.random.PRNGKey(request.seed)] * len(chunk))
    dreamed = api.dream_pixels(params, images, per_item, request.config, keys=keys, data=data)
    for job, rgb, (_, alpha) in zip(chunk, dreamed, pixels):
        job_request = dataclasses.replace(request, input=str(job.input), objective=job.objective)
        try:
            image_io.write_png(job.output, rgb, alpha, render.metadata(job_request, weights_sha256))
        except ImageError as e:
            raise OutputError(f"{e}; stopped (outputs already written are complete: "
                              f"rerun to resume)") from None
