"""Dreaming a stream of images: grouped by size, one compiled call per batch
(sharded over the chosen devices), resumable after any crash.

Inputs are read lazily (`inputs`), decoded a bounded distance ahead on one
thread and written as PNG on another while the devices dream (`stream`), so
memory does not grow with the number of images. Every output is written
atomically, so after a SIGKILL an output either exists complete or not at all;
a rerun skips the complete ones made by the same request (each output records
its request's fingerprint; one made with other flags is an error, never kept
or overwritten) and removes the temp files of dead writers. A bad input is
reported in OUTPUT_DIR/summary.json and skipped; Ctrl-C or SIGTERM stops after
the current batch, writes what was dreamed and the summary. An output that cannot
be written (disk full, folder gone) stops the run with one error: every later
write would fail the same way, and what is written stays. Per-image PRNG keys
depend only on the seed, so an output does not depend on the batch, the device
count or the process that dreamed it (and `scripts/dream.py --replay`
reproduces it).
"""
from __future__ import annotations

import dataclasses
import functools
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from dream_jax import api, errors, render
from dream_jax.io import atomic, image_io, input_folders, stream
from dream_jax.engine import devices as devices_, inputs as engine_inputs
from dream_jax.scale import distributed, summary as summary_
from dream_jax.model import weights
from dream_jax.errors import ImageError, UserError

SUMMARY_FILE = summary_.SUMMARY_FILE
ENGINES = ("local", "ray")


class OutputError(UserError):
    """An output could not be written: the run stops (the next ones would fail too)."""


def split_objectives(text: str) -> list[str]:
    """';'-separated objectives, each dreamed on every input."""
    texts = [t.strip() for t in text.split(";") if t.strip()]
    if not texts:
        raise UserError("empty objective")
    return texts


@dataclasses.dataclass
class Row:
    """One output to dream: an input's pixels under one objective."""
    input: Path
    objective: str
    output: Path
    rgb: np.ndarray
    alpha: np.ndarray | None
    sha256: str  # of the input's bytes that were decoded


@dataclasses.dataclass
class _Skipped:
    count: int


@dataclasses.dataclass
class _Failed:
    input: Path
    error: str


def _terminate_as_interrupt(fn):
    """`fn` with SIGTERM taken as Ctrl-C (KeyboardInterrupt), so that `kill` stops a
    batch as Ctrl-C does: after the current batch, with the summary written."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)  # handlers can only be set from the main thread

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, interrupt)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return wrapped


@_terminate_as_interrupt
def run_batch(input_spec: str, output_dir: str, request: render.DreamRequest,
              batch_size: int = 8, weights_dir=None, progress: bool = True, log=print,
              objective_texts: list[str] | None = None, devices=None,
              share: distributed.Share = distributed.Share(), engine: str = "local",
              ray_options=None) -> dict:
    """Dream this process's share of the inputs with `request` under each of
    `objective_texts` (default: the request's own objective), on `devices`
    ("all", a count, or a list of devices). Returns the summary; with several
    processes, the one that finishes the job last also merges the parts
    (`summary.py`). engine="ray" runs the whole job on a Ray cluster instead
    (`ray_engine.py`, `ray_options`: a `ray_engine.RayOptions`)."""
    start = time.perf_counter()
    texts = objective_texts or [request.objective]
    by_text = entries(request, texts)  # each request checked when made
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if engine not in ENGINES:
        raise UserError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "ray" and share.num_processes > 1:
        raise UserError("the ray engine runs the whole job: it takes no --num_processes "
                        "(Ray spreads the inputs over its actors)")
    chosen = (devices if isinstance(devices, list)
              else devices_.choose(devices) if engine == "local" else None)
    out_dir = Path(output_dir)
    input_folders.check_output_dir(input_spec, out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    if engine == "ray":
        from dream_jax.scale import ray_engine
        return ray_engine.run(input_spec, out_dir, request, texts, batch_size, weights_dir,
                              devices, ray_options or ray_engine.RayOptions(), log)
    atomic.remove_stale_temps(out_dir)  # only dead writers' temps: other processes' stay
    render.check_folder(out_dir)
    total = input_folders.count(input_spec)
    job = (summary_.job_fingerprint(input_spec, texts, request, share.num_processes)
           if share.num_processes > 1 else None)
    if job:
        summary_.start_part(out_dir, share)
    mine = len(range(share.process_id, total, share.num_processes)) * len(texts)
    summary = {"done": 0, "skipped": 0, "failed": [], "interrupted": False,
               "devices": len(chosen), "processes": share.num_processes,
               # where the time went (each thread adds to its own): read and write
               # run beside the dream, so wall time < their sum when they overlap
               "dream_seconds": 0.0, "read_seconds": 0.0, "write_seconds": 0.0}
    failed = False
    try:  # from here on, Ctrl-C still leaves a summary
        with tqdm(total=mine, unit="image", desc="batch", smoothing=0.1,
                  disable=None if progress else True) as bar:  # None: only on a terminal
            _dream_stream(input_spec, out_dir, request, texts, by_text, batch_size, weights_dir,
                          chosen, share, summary, bar, log)
    except KeyboardInterrupt:
        summary["interrupted"] = True
    except BaseException:
        failed = True
        raise
    finally:
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 3)
        summary["images_per_second"] = round(summary["done"] / seconds, 3) if seconds else 0.0
        for key in ("dream_seconds", "read_seconds", "write_seconds"):
            summary[key] = round(summary[key], 3)
        summary_error = _finish(out_dir, summary, share, job, log,
                                complete=not (failed or summary["interrupted"]))
    if summary_error:  # only reached when nothing else went wrong first
        raise summary_error
    return summary


def _read(input_spec: str, out_dir: Path, request: render.DreamRequest, texts: list[str],
          layers: tuple, share: distributed.Share, summary: dict):
    """This process's inputs, decoded and checked (runs on the read-ahead thread)."""
    for entry in input_folders.entries(input_spec, texts, out_dir):
        if not share.owns(entry.index):
            continue
        if entry.error:
            yield _Failed(entry.input, entry.error)
            continue
        pending, done = [], 0
        for text, output in entry.outputs:
            state = existing(output, dataclasses.replace(request, objective=text))
            if state is None:
                pending.append((text, output))
            elif state:
                done += 1
            else:
                yield _Failed(entry.input, made_otherwise(output))
        if done:
            yield _Skipped(done)
        if not pending:
            continue
        started = time.perf_counter()
        try:
            rgb, alpha, sha256 = decode(entry.input, request, layers)
        except UserError as e:
            yield _Failed(entry.input, str(e))
            continue
        finally:
            summary["read_seconds"] += time.perf_counter() - started
        for text, output in pending:
            yield Row(entry.input, text, output, rgb, alpha, sha256)


def existing(output: Path, request: render.DreamRequest) -> bool | None:
    """None: `output` is not there (dream it); True: there, made by this request
    (skip it); False: there, made otherwise (its record's request fingerprint
    differs, or it has none): an error, never silently kept or overwritten."""
    if not output.exists():
        return None
    try:
        return render.recorded_fingerprint(output) == render.fingerprint(request)
    except UserError:
        return False


def made_otherwise(output: Path) -> str:
    return (f"{output.name} exists in the output folder but was made with other flags (or "
            f"not by dream_jax); remove it or choose another --output_dir")


def decode(path: Path, request: render.DreamRequest, layers: tuple):
    """An input's pixels as the dream takes them, and the sha256 of the bytes
    decoded (UserError when it cannot)."""
    decoded = image_io.decode_file(path, request.max_pixels)
    rgb, alpha = render.fit_max_side(decoded.rgb, decoded.alpha, request.max_side)
    render.check_size(str(path), *rgb.shape[:2], request.config, layers)
    return rgb, alpha, decoded.sha256


def write_output(row: Row, rgb: np.ndarray, request: render.DreamRequest,
                 weights_sha256: str, digests: dict[str, str]) -> None:
    """One dreamed output, atomically, with the request that makes it again
    (`digests`: the sha256 of the guide's bytes, by path)."""
    job_request = dataclasses.replace(request, input=str(row.input), objective=row.objective)
    try:
        image_io.write_png(row.output, rgb, row.alpha, render.metadata(
            job_request, weights_sha256, {str(row.input): row.sha256, **digests}))
    except ImageError as e:
        raise OutputError(f"{e}; stopped (outputs already written are complete: "
                          f"rerun to resume)") from None


def entries(request: render.DreamRequest, texts: list[str]) -> dict:
    """{objective text: what an input dreams under it} (see engine.inputs): with
    --mask the text is the mask's objective, and --region's join it."""
    return {text: dataclasses.replace(request, objective=text).entry for text in texts}


def _dream_stream(input_spec, out_dir, request, texts, by_text, batch_size, weights_dir,
                  chosen, share, summary, bar, log) -> None:
    layers = engine_inputs.layers(list(by_text.values()))
    read = stream.Prefetch(_read(input_spec, out_dir, request, texts, layers, share, summary),
                           size=2 * batch_size)
    engine = None  # the weights are read only once there is something to dream

    def fail(path, error: str):
        error = errors.one_line(error) or "failed"
        summary["failed"].append({"input": str(path), "error": error})
        log(f"skipping: {error}", file=sys.stderr)
        bar.update(1)

    def rows():
        for item in read:
            if isinstance(item, _Skipped):
                summary["skipped"] += item.count
                bar.update(item.count)
            elif isinstance(item, _Failed):
                fail(item.input, item.error)
            else:
                yield item

    def write(item):
        row, rgb = item
        started = time.perf_counter()
        try:
            write_output(row, rgb, request, engine.weights_sha256, engine.digests)
        finally:
            summary["write_seconds"] += time.perf_counter() - started
        summary["done"] += 1
        bar.update(1)

    writer = stream.Writer(write, size=batch_size)
    try:
        for group in stream.group_by_shape(rows(), lambda row: row.rgb.shape[:2], batch_size,
                                           max_pending=2 * batch_size):
            engine = engine or _Engine(request, by_text, weights_dir, chosen)
            started = time.perf_counter()
            try:
                dreamed = engine.dream(group)
            except UserError as e:  # e.g. an objective the image cannot take
                for row in group:
                    fail(row.input, str(e))
                continue
            finally:
                summary["dream_seconds"] += time.perf_counter() - started
            for row, rgb in zip(group, dreamed):
                writer.submit((row, rgb))
    finally:
        read.close()
        writer.close()  # what was dreamed is written, even after Ctrl-C
    if writer.error is not None:
        raise writer.error


class _Engine:
    """The weights, the guide's features, the masks and the devices: what every
    batch shares."""

    def __init__(self, request: render.DreamRequest, by_text: dict, weights_dir, chosen):
        self.request, self.devices, self.entries = request, chosen, by_text
        self.digests: dict[str, str] = {}
        guide, masks = render.load_extras(request, self.digests)
        self.weights_sha256 = weights.read_manifest(weights_dir)["sha256"]
        # Placed once, as dream_pixels places them, so batches do not copy them again.
        self.params = jax.device_put(
            weights.load_params(weights_dir),
            devices_.replicated(devices_.mesh(chosen)) if len(chosen) > 1 else chosen[0])
        self.plan = engine_inputs.plan(self.params, list(self.entries.values()), guide, masks)

    def dream(self, group: list[Row]) -> np.ndarray:
        batch = self.plan.inputs(np.stack([row.rgb for row in group]),
                                 [self.entries[row.objective] for row in group],
                                 jax.random.PRNGKey(self.request.seed))
        return api.run(self.params, batch, self.request.config, devices=self.devices)


def _finish(out_dir: Path, summary: dict, share: distributed.Share, job: str | None, log,
            complete: bool) -> UserError | None:
    """Write the summary: one process, `summary.json`; several, this process's
    part, merged into `summary.json` when every part of the job is there. A
    failure is returned, not raised, so that it never hides the error that
    stopped the run."""
    if share.num_processes == 1:
        return summary_.write(out_dir / SUMMARY_FILE, summary)
    error = summary_.finish_part(out_dir, share, job, summary, complete)
    if complete and not error and not (out_dir / SUMMARY_FILE).exists():
        log(f"process {share.process_id} of {share.num_processes}: share "
            f"{'done' if complete else 'stopped'}, summary in "
            f"{summary_.part_name(share.process_id, share.num_processes)}; {SUMMARY_FILE} "
            f"is merged when every process has finished", file=sys.stderr)
    return error
