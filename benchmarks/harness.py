"""DeepDream speed: dream_jax against the PyTorch reference, eager and compiled.

Every case (mode, size, batch) is set up for every implementation first; its
first call is timed on its own as `compile_s` (tracing and compilation for jax
and torch.compile, warm-up for eager torch). Then the steady-state calls run
`repeats` times, interleaved case by case and implementation by implementation
(the order rotating each repeat), so that machine noise hits all alike.

What is timed is the same work in both frameworks: the default objective
(L2 of inception_4c/output), the default config, without tiling (tile_size is
raised to the image size: the torch reference does not tile).
  step:   one octave level, `steps` gradient steps at size x size
  octave: the whole `octave_n`-level loop at size x size (deepdream)
FLOPs come from XLA's cost analysis of the jax case and are used for the torch
cases too, so achieved FLOP/s are comparable. Compilation caches on disk are
off: compile_s is a cold compile (caches inside the process stay on). With
`cache_dir`, jax's (compiled and exported steps) and inductor's on-disk caches
live there instead, so a second run reports the first call of a process that
finds them warm.
"""
from __future__ import annotations

import atexit
import ctypes
import dataclasses
import datetime
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp

from dream_jax.model import caffe_ops, preprocess
from dream_jax.engine import compile_cache, deepdream, gradients
from dream_jax import objectives
from dream_jax.engine.config import DreamConfig
from dream_jax.model import weights as weights_lib
from dream_jax.errors import UserError

IMPLS = ("jax", "torch", "torch_compile")
MODES = ("step", "octave")
LAYER = objectives.DEFAULT
# Dense peak FLOP/s of known accelerators (SXM parts); f32 convolutions run as
# TF32 by default in both XLA and cuDNN, so float32 cases are measured against
# the TF32 peak, bfloat16 cases against the bf16 one.
PEAK_FLOPS = {"H100": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12},
              "H200": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12}}
PEAK_PRECISION = {"float32": "tf32", "bfloat16": "bf16"}


@dataclasses.dataclass(frozen=True)
class Case:
    mode: str
    size: int
    batch: int
    steps: int
    precision: str = "float32"
    kernels: str = "auto"

    @property
    def config(self) -> DreamConfig:
        # A budget no image reaches: the whole image's gradient, as torch computes it.
        return DreamConfig(iter_n=self.steps, precision=self.precision, memory_budget=1 << 30,
                           kernels=self.kernels)

    @property
    def levels(self) -> list[tuple[int, int]]:
        """The sizes dreamed at: one, or every octave level that reaches LAYER."""
        if self.mode == "step":
            return [(self.size, self.size)]
        shapes = deepdream.octave_shapes(self.size, self.size, self.config.octave_n,
                                     self.config.octave_scale)
        return [s for s in shapes if deepdream.fits_network(*s, (LAYER,))]


# --- memory ---

def _release_free_memory() -> None:
    """glibc keeps freed heap pages resident: give them back, so that the RSS
    before a call is live memory, not what an earlier (bigger) case left behind."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kib(field: str) -> int | None:
    try:
        return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1])
    except (OSError, TypeError):
        return None


def _reset_peak_rss() -> bool:
    """Linux resets the process's peak RSS (VmHWM) on writing 5 to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    if (kib := _status_kib("VmHWM")) is not None:
        return kib * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _device_peak(impl: str) -> int | None:
    """Peak accelerator memory: torch's since its reset in _measure; jax has no
    reset, so its number is the process's peak so far (cases run smallest first)."""
    if impl == "jax":
        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    import torch
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def _measure(run: Callable[[], None], impl: str) -> tuple[float, dict]:
    """Seconds for one call, and the peak memory during it: the process's peak
    RSS (both frameworks' runtimes and weights included) and its growth over
    the RSS just before the call (the call's own working memory)."""
    _release_free_memory()
    per_call = _reset_peak_rss()
    before = _status_kib("VmRSS") if per_call else None
    if impl != "jax":
        import torch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    peak = _peak_rss_bytes()
    return seconds, {"peak_rss_bytes": peak,
                     "rss_growth_bytes": peak - before * 1024 if before is not None else None,
                     "peak_rss_scope": "call" if per_call else "process",
                     "peak_device_bytes": _device_peak(impl)}


# --- the implementations: each returns run() doing one whole call, synchronised ---

def _noise(case: Case) -> np.ndarray:
    """The notebook's start image: uniform noise around grey, in model space."""
    rng = np.random.default_rng(0)
    return preprocess.to_model(rng.uniform(100, 156, (case.batch, case.size, case.size, 3)))


def _jax_inputs(case: Case):
    objective_list = [objectives.parse(LAYER)] * case.batch
    terms = objectives.union_terms(objective_list)
    weights = jnp.asarray(objectives.weight_matrix(objective_list, terms))
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(case.batch)])
    return objective_list, terms, weights, keys


def jax_runner(params, case: Case) -> Callable[[], None]:
    images = jnp.asarray(_noise(case))
    objective_list, terms, weights, keys = _jax_inputs(case)
    if case.mode == "step":  # through the compile cache, as deepdream calls it
        static = dict(terms=terms, config=deepdream.StepConfig.of(case.config),
                      gradient=gradients.Whole())
        steps = jnp.int32(case.steps)
        args = (params, images, weights, {}, keys, steps)
        return lambda: compile_cache.executable(deepdream.dream_octave, static,
                                                *args)(*args).block_until_ready()
    return lambda: deepdream.deepdream(params, images, objective_list, case.config,
                                       keys).block_until_ready()


def torch_runner(tparams, case: Case, compiled: bool) -> Callable[[], None]:
    import torch
    from benchmarks import torch_reference as ref
    device = next(iter(tparams.values()))[0].device
    images = torch.from_numpy(_noise(case)).permute(0, 3, 1, 2).contiguous().to(device)
    ascend = ref.compiled_ascend() if compiled else ref._ascend
    loop = ref.dream_octave if case.mode == "step" else ref.deepdream

    def run():
        out = loop(tparams, images, LAYER, torch.Generator().manual_seed(0), case.config, ascend)
        out.cpu()  # waits for the device
    return run


# --- FLOPs ---

def jax_flops(params, case: Case) -> float:
    """FLOPs of one whole call, from XLA's cost analysis of the octave at every
    level, times the steps: the steps are a `while` loop, whose body XLA counts
    once whatever its trip count."""
    _, terms, weights, keys = _jax_inputs(case)
    total = 0.0
    for height, width in case.levels:
        images = jax.ShapeDtypeStruct((case.batch, height, width, 3), jnp.float32)
        compiled = deepdream.dream_octave.lower(
            params, images, weights, {}, keys, jnp.int32(1), terms=terms,
            config=deepdream.StepConfig.of(case.config), gradient=gradients.Whole()).compile()
        analysis = compiled.cost_analysis()
        analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
        total += analysis["flops"] * case.steps
    return total


# --- the run ---

def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _peak_flops(precision: str) -> float | None:
    kind = jax.devices()[0].device_kind
    for name, peaks in PEAK_FLOPS.items():
        if name in kind and "PCIe" not in kind:
            return peaks[PEAK_PRECISION[precision]]
    return None


def _dream_jax_commit() -> str | None:
    """The commit of the dream_jax being measured, `+dirty` if its files differ."""
    repo = Path(deepdream.__file__).resolve().parents[1]
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True,
                                        text=True, check=True).stdout.strip()
        return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "dream_jax") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(precision: str = "float32") -> dict:
    """Machine, versions and date, for the record."""
    import flax
    import jaxlib
    cpu = platform.processor()
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())[1]
    except (OSError, TypeError):
        pass
    machine = {"platform": platform.platform(), "cpu": cpu, "cpu_count": _cpus(),
               "jax_backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
               "peak_flops": _peak_flops(precision), "peak_precision": PEAK_PRECISION[precision]}
    versions = {"dream_jax_commit": _dream_jax_commit(),
                "python": platform.python_version(), "jax": jax.__version__,
                "jaxlib": jaxlib.__version__, "flax": flax.__version__, "numpy": np.__version__}
    try:
        import torch
    except ImportError:
        torch = None
    if torch:
        versions["torch"] = torch.__version__
        machine["torch_device"] = (torch.cuda.get_device_name() if torch.cuda.is_available()
                                   else "cpu")
        machine["torch_threads"] = torch.get_num_threads()
    return {"machine": machine, "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _setup_jax_caches(cache_dir: Path | None) -> None:
    """Cold compiles, or the scripts' on-disk caches (compiled and exported steps) in cache_dir."""
    # Before anything compiles (even a PRNGKey): jax checks the setting once.
    jax.config.update("jax_enable_compilation_cache", cache_dir is not None)
    compile_cache.enable(cache_dir)


def _setup_torch(params, cache_dir: Path | None):
    # Cold compiles, like jax's: inductor's and triton's on-disk caches in a
    # folder of this process's own; or warm ones in cache_dir.
    if cache_dir is None:
        cache = tempfile.mkdtemp(prefix="benchmark_inductor_")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    else:
        cache = str(cache_dir / "inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    os.environ["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
    import torch
    import torch._dynamo
    import torch._functorch.config
    import torch._inductor.config
    from benchmarks import torch_reference as ref
    torch.set_num_threads(_cpus())
    torch._inductor.config.fx_graph_cache = cache_dir is not None
    torch._functorch.config.enable_autograd_cache = cache_dir is not None
    torch._dynamo.config.recompile_limit = 64              # one graph per shape, many shapes
    return ref.torch_params(params, "cuda" if torch.cuda.is_available() else "cpu")


def _summary(case: Case, impl: str, compile_s: float, times: list[float], memory: list[dict],
             flops: float | None, peak_flops: float | None) -> dict:
    median = float(np.median(times))
    steps = case.steps * len(case.levels)
    pixels = case.batch * case.steps * sum(h * w for h, w in case.levels)
    result = {
        "impl": impl, "mode": case.mode, "size": case.size, "batch": case.batch,
        "steps": case.steps, "compile_s": compile_s, "times_s": times, "median_s": median,
        "min_s": min(times), "max_s": max(times),
        "iqr_s": float(np.subtract(*np.percentile(times, [75, 25]))),
        "per_step_s": median / steps, "images_per_s": case.batch / median,
        "megapixels_per_s": pixels / median / 1e6,
        "flops": flops, "flops_per_s": flops / median if flops else None,
        "fraction_of_peak": flops / median / peak_flops if flops and peak_flops else None,
    }
    for key in ("peak_rss_bytes", "rss_growth_bytes", "peak_device_bytes"):
        values = [m[key] for m in memory if m[key] is not None]
        result[key] = max(values) if values else None
    result["peak_rss_scope"] = memory[0]["peak_rss_scope"]
    return result


def run(impls, modes, sizes, batches, steps: int, repeats: int, weights_dir=None,
        log: Callable[[str], None] = print, cache_dir: Path | None = None,
        precision: str = "float32", kernels: str = "auto") -> dict:
    """Benchmark every (mode, size, batch) with every implementation; returns the record."""
    _setup_jax_caches(cache_dir)  # first, before anything compiles
    load_before = os.getloadavg()[0]  # other work on the machine skews timings: record it
    impls, modes = list(dict.fromkeys(impls)), list(dict.fromkeys(modes))
    if unknown := set(impls) - set(IMPLS):
        raise UserError(f"unknown impl(s) {sorted(unknown)}; known: {', '.join(IMPLS)}")
    if unknown := set(modes) - set(MODES):
        raise UserError(f"unknown mode(s) {sorted(unknown)}; known: {', '.join(MODES)}")
    if steps < 1 or repeats < 1 or min(batches) < 1:
        raise UserError("steps, repeats and batch must be >= 1")
    DreamConfig(precision=precision, kernels=kernels)  # checks them
    for size in sizes:
        if not deepdream.fits_network(size, size, (LAYER,)):
            raise UserError(f"size {size} is too small for {LAYER}")
    params = jax.device_put(weights_lib.load_params(weights_dir))
    tparams = _setup_torch(params, cache_dir) if set(impls) - {"jax"} else None
    record = environment(precision)
    record["machine"]["load_average_1min_at_start"] = load_before
    cases = [Case(m, s, b, steps, precision, kernels) for s in sorted(set(sizes)) for b in sorted(set(batches))
             for m in modes]  # smallest first: see _device_peak
    runners, compile_s, times, memory = {}, {}, {}, {}
    for case in cases:
        for impl in impls:
            key = (case, impl)
            runners[key] = (jax_runner(params, case) if impl == "jax"
                            else torch_runner(tparams, case, compiled=impl == "torch_compile"))
            compile_s[key], _ = _measure(runners[key], impl)
            times[key], memory[key] = [], []
            log(f"{impl:>13} {case.mode} {case.size}x{case.size} batch {case.batch}: "
                f"first call {compile_s[key]:.1f}s")
    for r in range(repeats):
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for case in cases:
            for impl in order:
                seconds, used = _measure(runners[case, impl], impl)
                times[case, impl].append(seconds)
                memory[case, impl].append(used)
        log(f"repeat {r + 1}/{repeats} done")
    peak_flops = _peak_flops(precision)
    results, speedups = [], []
    for case in cases:
        flops = jax_flops(params, case)
        for impl in impls:
            results.append(_summary(case, impl, compile_s[case, impl], times[case, impl],
                                    memory[case, impl], flops, peak_flops))
        if "jax" in impls:
            median = {impl: float(np.median(times[case, impl])) for impl in impls}
            speedups.append({"mode": case.mode, "size": case.size, "batch": case.batch,
                             **{f"jax_vs_{impl}": median[impl] / median["jax"]
                                for impl in impls if impl != "jax"}})
    settings = {"objective": LAYER,
                "config": dataclasses.asdict(DreamConfig(iter_n=steps, precision=precision,
                                                         kernels=kernels)),
                "kernels": caffe_ops.resolve_kernels(kernels),
                "tiling": "off (the whole image's gradient)", "repeats": repeats,
                "disk_caches": str(cache_dir) if cache_dir else "off (cold compiles)",
                "flops_source": "XLA cost_analysis of the jax case, used for every impl"}
    return {**record, "command": " ".join(sys.argv), "settings": settings,
            "results": results, "speedups": speedups}


def markdown(record: dict) -> str:
    """The results and speedups as Markdown tables."""
    lines = ["| impl | mode | size | batch | steps | compile s | median s (min–max) | ms/step "
             "| img/s | Mpx/s | peak RSS MiB (+growth) | peak device MiB | GFLOP/s | of peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in record["results"]:
        frac = f"{r['fraction_of_peak']:.1%}" if r["fraction_of_peak"] else "–"
        gflops = f"{r['flops_per_s'] / 1e9:.1f}" if r["flops_per_s"] else "–"
        device = f"{r['peak_device_bytes'] / 2**20:.0f}" if r["peak_device_bytes"] else "–"
        growth = (f" (+{r['rss_growth_bytes'] / 2**20:.0f})" if r["rss_growth_bytes"] is not None
                  else "")
        lines.append(
            f"| {r['impl']} | {r['mode']} | {r['size']} | {r['batch']} | {r['steps']} "
            f"| {r['compile_s']:.1f} | {r['median_s']:.3f} ({r['min_s']:.3f}–{r['max_s']:.3f}) "
            f"| {r['per_step_s'] * 1e3:.0f} | {r['images_per_s']:.3g} | {r['megapixels_per_s']:.3g} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f}{growth} | {device} | {gflops} | {frac} |")
    if record["speedups"]:
        names = [k for k in record["speedups"][0] if k.startswith("jax_vs_")]
        lines += ["", "| mode | size | batch | " + " | ".join(
                      f"{n.replace('_vs_', ' vs ')} (×)" for n in names) + " |",
                  "|---|---|---|" + "---|" * len(names)]
        for s in record["speedups"]:
            lines.append(f"| {s['mode']} | {s['size']} | {s['batch']} | "
                         + " | ".join(f"{s[n]:.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def write(record: dict, out: str) -> tuple[Path, Path]:
    """`out`.json and `out`.md."""
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = Path(f"{out}.json"), Path(f"{out}.md")
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path.write_text(markdown(record))
    return json_path, md_path
