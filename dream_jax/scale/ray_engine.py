"""The Ray engine: one batch job on a pool of Ray actors (`batch_dream.py --engine=ray`).

The driver lists the job once (names only, as one process does), counts the
outputs that exist as skipped and the inputs that cannot have outputs as
failed, and streams the rest through Ray Data: `map_batches` with a callable
class makes a fixed pool of actors, each holding the weights and its compiled
octaves on its own device(s). An actor decodes its batch's images, dreams
them a same-size group per compiled call and writes each output with
batch.py's atomic write, so the bytes are the local engine's. A dead actor is
restarted by Ray and its batch retried (Ray Data's actors default to
unlimited restarts and task retries); the retried batch skips the outputs its
first attempt wrote, so an input is never written twice and never half. The
driver collects every row's result and writes `summary.json`.

Ray is imported only here, and only when the engine runs: it is an optional
extra (`pip install 'dream_jax[ray]'`).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from dream_jax.io import atomic, input_folders, stream
from dream_jax.model import weights
from dream_jax.scale import batch, summary as summary_
from dream_jax.engine import compile_cache, devices as devices_, inputs as engine_inputs
from dream_jax import render
from dream_jax.errors import UserError

_TIMES = ("dream_seconds", "read_seconds", "write_seconds")


@dataclasses.dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local cluster, started for the job and stopped after
    actors: int = 1             # the pool's size: each actor holds the weights once
    cpus_per_actor: float = 1   # below the node's CPUs, so that Ray Data's own tasks run
    gpus_per_actor: float = 0   # 1 on GPU nodes: Ray then sets the actor's visible GPU

    def check(self) -> None:
        if self.actors < 1:
            raise UserError(f"--ray_actors must be >= 1, got {self.actors}")
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise UserError("--ray_cpus_per_actor and --ray_gpus_per_actor must be >= 0")


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError("the ray engine needs Ray: pip install 'dream_jax[ray]'") from None
    return ray


class Dreamer:
    """One actor of the pool: the engine of batch.py, built once, then one
    call per batch of rows (input path, objective number, output path)."""

    def __init__(self, request: render.DreamRequest, texts: list[str], weights_dir, devices):
        # The actor's process is an edge: its own machine's cache, as a script's,
        # and its own $DREAM_JAX_WEIGHTS where the driver names no folder.
        compile_cache.enable(compile_cache.default_folder(os.environ))
        weights_dir = weights_dir or os.environ.get(weights.WEIGHTS_ENV) or None
        self.request, self.texts = request, texts
        self.engine = batch._Engine(request, batch.entries(request, texts), weights_dir,
                                    devices_.choose(devices))
        self.layers = engine_inputs.layers(list(self.engine.entries.values()))

    def __call__(self, rows: dict) -> dict:
        times = dict.fromkeys(_TIMES, 0.0)
        status = ["done"] * len(rows["index"])
        errors = [""] * len(status)
        decoded: dict[str, object] = {}  # one decode per input of the batch
        pending = []
        for i, (given, path, k, output) in enumerate(zip(rows["input"], rows["path"], rows["k"],
                                                         rows["output"])):
            if Path(output).exists():  # written by an earlier attempt of this batch
                status[i] = "skipped"
                continue
            started = time.perf_counter()
            if path not in decoded:
                try:
                    decoded[path] = batch.decode(Path(path), self.request, self.layers)
                except UserError as e:  # named as the driver was given it, as locally
                    decoded[path] = str(e).replace(str(path), str(given))
            times["read_seconds"] += time.perf_counter() - started
            if isinstance(decoded[path], str):
                status[i], errors[i] = "bad_input", decoded[path]
                continue
            rgb, alpha, sha256 = decoded[path]
            pending.append((i, batch.Row(Path(path), self.texts[int(k)], Path(output),
                                         rgb, alpha, sha256)))
        for group in stream.group_by_shape(pending, lambda item: item[1].rgb.shape[:2],
                                           batch_size=len(pending) or 1,
                                           max_pending=len(pending)):
            started = time.perf_counter()
            try:
                dreamed = self.engine.dream([row for _, row in group])
            except UserError as e:  # e.g. an objective the image cannot take
                for i, _ in group:
                    status[i], errors[i] = "failed", str(e)
                continue
            finally:
                times["dream_seconds"] += time.perf_counter() - started
            started = time.perf_counter()
            for (_, row), rgb in zip(group, dreamed):
                batch.write_output(row, rgb, self.request, self.engine.weights_sha256,
                                   self.engine.digests)
            times["write_seconds"] += time.perf_counter() - started
        first = np.arange(len(status)) == 0  # a batch's times ride on its first row
        return {"index": np.asarray(rows["index"]), "k": np.asarray(rows["k"]),
                "status": np.asarray(status), "error": np.asarray(errors),
                "devices": np.full(len(status), len(self.engine.devices)),
                **{key: np.where(first, value, 0.0) for key, value in times.items()}}


def _rows(input_spec: str, out_dir: Path, request: render.DreamRequest, texts: list[str],
          summary: dict, failures: list) -> list[dict]:
    """The outputs to dream, as names; the existing ones counted as skipped and
    inputs that cannot have outputs as failures, as the local engine does."""
    rows = []
    for entry in input_folders.entries(input_spec, texts, out_dir):
        if entry.error:
            failures.append((entry.index, -1, {"input": str(entry.input), "error": entry.error}))
            continue
        for k, (text, output) in enumerate(entry.outputs):
            state = batch.existing(output, dataclasses.replace(request, objective=text))
            if state:
                summary["skipped"] += 1
            elif state is False:
                failures.append((entry.index, k, {"input": str(entry.input),
                                                  "error": batch.made_otherwise(output)}))
            else:
                rows.append({"index": entry.index, "input": str(entry.input), "k": k,
                             "path": str(entry.input.resolve()), "output": str(output.resolve())})
    return rows


def run(input_spec: str, out_dir: Path, request: render.DreamRequest, texts: list[str],
        batch_size: int, weights_dir, devices, options: RayOptions, log=print) -> dict:
    """Dream the whole job on Ray actors; the summary, also written to summary.json."""
    options.check()
    ray = _import_ray()
    start = time.perf_counter()
    atomic.remove_stale_temps(out_dir)  # one job, one writer of its temps: the pool
    render.check_folder(out_dir)
    input_folders.count(input_spec)  # no input at all is an error, before Ray starts
    summary = {"done": 0, "skipped": 0, "failed": [], "interrupted": False, "devices": 0,
               "processes": 1, "engine": "ray", "actors": options.actors,
               **dict.fromkeys(_TIMES, 0.0)}
    failures: list[tuple[int, int, dict]] = []  # (input index, objective, failure)
    rows = _rows(input_spec, out_dir, request, texts, summary, failures)
    started_here = not ray.is_initialized()
    try:
        if rows:
            if started_here:
                ray.init(address=options.address, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            _check_resources(ray, options)
            _dream(ray, rows, request, texts, batch_size, weights_dir, devices, options,
                   summary, failures)
            atomic.remove_stale_temps(out_dir)  # a killed actor's: the pool is done
    except KeyboardInterrupt:
        summary["interrupted"] = True
    finally:
        summary["failed"] = [f for *_, f in sorted(failures, key=lambda f: f[:2])]
        if started_here and ray.is_initialized():
            ray.shutdown()
        seconds = time.perf_counter() - start
        summary["seconds"] = round(seconds, 3)
        summary["images_per_second"] = round(summary["done"] / seconds, 3) if seconds else 0.0
        for key in _TIMES:
            summary[key] = round(summary[key], 3)
        error = summary_.write(out_dir / summary_.SUMMARY_FILE, summary)
    if error:
        raise error
    for failure in summary["failed"]:
        log(f"skipping: {failure['error']}", file=sys.stderr)
    return summary


def _check_resources(ray, options: RayOptions) -> None:
    """A pool the cluster cannot hold would wait for ever: refuse it at once."""
    total = ray.cluster_resources()
    for what, each in (("CPU", options.cpus_per_actor), ("GPU", options.gpus_per_actor)):
        if each and options.actors * each > total.get(what, 0):
            raise UserError(f"{options.actors} Ray actor(s) x {each:g} {what} need "
                            f"{options.actors * each:g} {what}s; the cluster has "
                            f"{total.get(what, 0):g} (lower --ray_actors or "
                            f"--ray_{what.lower()}s_per_actor)")


def _dream(ray, rows, request, texts, batch_size, weights_dir, devices, options,
           summary, failures) -> None:
    """Stream the rows through the actor pool, counting into `summary`."""
    by_key = {(row["index"], row["k"]): row for row in rows}
    # Actors run elsewhere (another folder, another node): every path absolute.
    if request.guide:
        request = dataclasses.replace(request, guide=str(Path(request.guide).resolve()))
    dataset = ray.data.from_items(rows).map_batches(
        Dreamer, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={"request": request, "texts": texts, "devices": devices,
                               "weights_dir": weights_dir and str(Path(weights_dir).resolve())},
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=options.cpus_per_actor, num_gpus=options.gpus_per_actor or None)
    bad_inputs = set()
    try:
        for result in dataset.iter_rows():
            index, k = int(result["index"]), int(result["k"])
            summary["devices"] = max(summary["devices"], int(result["devices"]) * options.actors)
            for key in _TIMES:
                summary[key] += float(result[key])
            status = str(result["status"])
            if status in ("done", "skipped"):
                summary[status] += 1
            elif status == "failed" or index not in bad_inputs:  # a bad input fails once
                bad_inputs.add(index)
                failures.append((index, k, {"input": by_key[index, k]["input"],
                                            "error": _first_line(str(result["error"]))}))
    except Exception as e:  # noqa: BLE001 -- Ray wraps what an actor raised
        cause = e
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise UserError(_first_line(str(cause))) from None


def _first_line(error: str) -> str:
    return error.strip().splitlines()[0] if error.strip() else "failed"
