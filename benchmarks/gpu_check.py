"""The prepared GPU check: accelerator against CPU, then the benchmarks that matter.

A GPU is lent now and then, for minutes at a time, so one command has to do
everything and hand back a record even when it is cut short:

  correctness  the same requests on the accelerator and on the CPU device
               (`jax.default_device`): one dream step and a short octave loop
               (uint8 pixels compared, with a stated tolerance: f32
               convolutions run as TF32 on recent NVIDIA GPUs) and the
               classification of a photo (top-5, max |delta prob|).
  benchmarks   scripts/benchmark.py in a subprocess per case, most important
               first, each with its own timeout; a failure is recorded (its
               last stderr line) and the check goes on; cases that no longer
               fit the time budget are recorded as skipped.

Cases share an on-disk cache folder, so XLA's autotuning and the harness's
FLOP count reuse earlier compilations of the same shapes (every case still
compiles its own shapes for the first time), and a `warm` case repeats one
to measure the first call with warm caches. The custom-vs-native gradient
cases set DREAM_JAX_KERNELS and use caches of their own: the exported-step
cache does not key on that variable.

The record (gpu_check.json, gpu_check.md, and every case's own benchmark
files under benchmarks/) is rewritten after each step. With `dry_run`
everything runs on the CPU at tiny sizes (the "accelerator" is the CPU too),
so the whole path is tested without a GPU.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

import jax

import dream_jax
from benchmarks import harness
from dream_jax.model import classify, weights
from dream_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_SCRIPT = ROOT / "scripts" / "benchmark.py"
PHOTO = ROOT / "docs" / "chelsea_input.jpg"  # scikit-image's chelsea (CC0), in the repository
MIN_START_S = 20  # a case is not started with less of the budget left than this

# --- correctness ---

DREAM_REQUESTS = {  # jitter 0: the octave loop reuses the single step's compilation
    "dream_step": dict(octave_n=1, iter_n=1, jitter=0),
    "octave_loop": dict(octave_n=2, iter_n=3, jitter=0),
}
PIXEL_TOLERANCE = {  # TF32 rounding (and max-pool ties it flips) may move some values a level
    "dream_step": {"min_within_2_levels": 0.995, "max_mean_abs_diff": 0.25},
    "octave_loop": {"min_within_2_levels": 0.99, "max_mean_abs_diff": 0.5},
}
CLASS_TOLERANCE = {"top1_equal": True, "top5_same_set": True, "max_prob_diff": 0.02}


def seeded_image(size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _on(device, fn: Callable, *args, **kwargs):
    """fn with `device` as the default: dream_jax puts its work where jax defaults to."""
    with jax.default_device(device):
        return fn(*args, **kwargs)


def pixel_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"within_2_levels": float(np.mean(diff <= 2)), "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": int(diff.max())}


def check_dream(params, image: np.ndarray, request: dict, tolerance: dict, devices) -> dict:
    """The same dream on both devices; uint8 outputs within `tolerance`."""
    accelerator, cpu = (_on(d, dream_jax.dream, image, params=params, **request) for d in devices)
    measured = pixel_agreement(accelerator, cpu)
    passed = (measured["within_2_levels"] >= tolerance["min_within_2_levels"]
              and measured["mean_abs_diff"] <= tolerance["max_mean_abs_diff"])
    return {"request": {**request, "size": image.shape[0]}, "measured": measured,
            "tolerance": tolerance, "passed": passed}


def _probabilities(params, rgb: np.ndarray, labels: list[str]) -> np.ndarray:
    probs = np.zeros(len(labels))
    for entry in classify.classify(params, rgb, labels, top_k=len(labels)):
        probs[entry["index"]] = entry["prob"]
    return probs


def check_classification(params, labels: list[str], devices) -> dict:
    """A photo's class probabilities on both devices: same top-1, same top-5, close values."""
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    accelerator, cpu = (_on(d, _probabilities, params, rgb, labels) for d in devices)
    top5 = [np.argsort(-p, kind="stable")[:5].tolist() for p in (accelerator, cpu)]
    measured = {"top5_accelerator": top5[0], "top5_cpu": top5[1],
                "top5_labels": [labels[i] for i in top5[1]],
                "max_prob_diff": float(np.abs(accelerator - cpu).max())}
    passed = (top5[0][0] == top5[1][0] and set(top5[0]) == set(top5[1])
              and measured["max_prob_diff"] <= CLASS_TOLERANCE["max_prob_diff"])
    return {"request": {"image": PHOTO.relative_to(ROOT).as_posix()}, "measured": measured,
            "tolerance": CLASS_TOLERANCE, "passed": passed}


def _guarded(check: Callable[[], dict]) -> dict:
    """A check that raises is a failed check with its error, not the end of the run:
    the benchmarks after it are still worth the GPU's minutes."""
    try:
        return check()
    except Exception as e:  # noqa: BLE001 -- recorded, printed, and it fails the check
        traceback.print_exc()
        return {"passed": False, "error": f"{type(e).__name__}: {e}".splitlines()[0]}


def correctness(params, labels: list[str], dry_run: bool) -> dict:
    """Accelerator vs CPU (in a dry run: CPU vs CPU) for two dreams and a classification."""
    cpu = jax.devices("cpu")[0]
    devices = (cpu if dry_run else jax.devices()[0], cpu)
    image = seeded_image(64 if dry_run else 224)
    checks = {name: _guarded(lambda n=name: check_dream(params, image, DREAM_REQUESTS[n],
                                                        PIXEL_TOLERANCE[n], devices))
              for name in DREAM_REQUESTS}
    checks["classification"] = _guarded(lambda: check_classification(params, labels, devices))
    return {"accelerator": str(devices[0]), "reference": str(cpu), "precision": "float32",
            "image": "seeded uniform noise, numpy default_rng(0)", "checks": checks,
            "passed": all(c["passed"] for c in checks.values())}


# --- the benchmark cases ---

SHAPES = {  # the cases the GPU check times: (mode, size, batch)
    "batch": ("step", 224, 64),
    "large": ("step", 1024, 8),
    "octave": ("octave", 1024, 1),
}
DRY_SHAPES = {"batch": ("step", 64, 2), "large": ("step", 64, 1), "octave": ("octave", 64, 1)}
PRECISION_TAGS = {"bf16": "bfloat16", "f32": "float32"}
TORCH_IMPLS = {"torch", "torch_compile"}
RUN_SETTINGS = {False: {"steps": 10, "repeats": 5}, True: {"steps": 2, "repeats": 1}}


@dataclasses.dataclass(frozen=True)
class Variant:
    impls: tuple[str, ...]
    kernels: str | None = None  # DREAM_JAX_KERNELS; None: unset, the library's default
    cache: str = "shared"
    timeout_s: float = 150
    warm: bool = False  # repeats its base case in the same cache: a first call with warm caches


VARIANTS = {
    "": Variant(("jax", "torch")),
    "compile": Variant(("torch_compile",), timeout_s=200),
    "custom": Variant(("jax",), kernels="custom", cache="custom", timeout_s=120),
    "native": Variant(("jax",), kernels="native", cache="native", timeout_s=120),
    "warm": Variant(("jax",), timeout_s=60, warm=True),
}
# Most important first: the targets' shapes in bf16, the custom-vs-native gradients
# (which path the GPU should default to), then f32, then the 4-octave loop.
ORDER = ("batch-bf16", "large-bf16", "batch-bf16-custom", "batch-bf16-native", "batch-bf16-warm",
         "batch-bf16-compile", "large-bf16-compile", "batch-f32", "large-f32",
         "batch-f32-compile", "large-f32-compile", "octave-bf16", "octave-f32",
         "large-bf16-custom", "large-bf16-native", "octave-bf16-compile", "octave-f32-compile")
# One case of each kind (torch.compile aside: minutes on a CPU): the path, not the numbers.
DRY_RUN_ORDER = ("batch-f32", "batch-f32-custom", "batch-f32-native", "batch-f32-warm")


@dataclasses.dataclass(frozen=True)
class BenchCase:
    shape: str
    precision: str
    variant: str = ""
    dry_run: bool = False

    @classmethod
    def parse(cls, name: str, dry_run: bool = False) -> "BenchCase":
        shape, tag, *variant = name.split("-")
        return cls(shape, PRECISION_TAGS[tag], "-".join(variant), dry_run)

    @property
    def name(self) -> str:
        tag = {v: k for k, v in PRECISION_TAGS.items()}[self.precision]
        return "-".join(filter(None, (self.shape, tag, self.variant)))

    @property
    def base(self) -> str:
        return BenchCase(self.shape, self.precision).name

    @property
    def spec(self) -> Variant:
        return VARIANTS[self.variant]

    @property
    def mode_size_batch(self) -> tuple[str, int, int]:
        return (DRY_SHAPES if self.dry_run else SHAPES)[self.shape]

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s * (2 if self.mode_size_batch[0] == "octave" else 1)


def plan(dry_run: bool = False, names: list[str] | None = None) -> list[BenchCase]:
    """The cases to run, in order; `names` picks some (in the plan's order)."""
    order = DRY_RUN_ORDER if dry_run else ORDER
    if unknown := [n for n in names or [] if n not in order]:
        raise UserError(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(order)}")
    return [BenchCase.parse(n, dry_run) for n in order if not names or n in names]


def benchmark_command(case: BenchCase, out_dir: Path, cache_dir: Path,
                      weights_dir: Path | None) -> list[str]:
    mode, size, batch = case.mode_size_batch
    settings = RUN_SETTINGS[case.dry_run]
    command = [sys.executable, str(BENCHMARK_SCRIPT), f"--impl={','.join(case.spec.impls)}",
               f"--mode={mode}", f"--sizes={size}", f"--batch={batch}",
               f"--steps={settings['steps']}", f"--repeats={settings['repeats']}",
               f"--precision={case.precision}", f"--out={out_dir / case.name}",
               f"--cache={cache_dir}"]
    return command + ([f"--weights={weights_dir}"] if weights_dir else [])


def benchmark_env(case: BenchCase) -> dict[str, str | None]:
    """What a case's subprocess environment sets (None: removes), for the run and the record."""
    env = {"DREAM_JAX_KERNELS": case.spec.kernels,
           # jax and torch share the device in one process: jax must not reserve 75% of it.
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    if case.dry_run:
        env |= {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    return env


def _environ(changes: dict[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_process(command: list[str], env: dict[str, str], timeout_s: float
                ) -> tuple[int | None, str, str]:
    """(exit code, None on timeout; stdout; stderr). The subprocess leads its own
    process group, so a timeout also ends what it started (torch.compile's workers)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        return None, out, err
    finally:
        _kill_group(proc.pid)


def _last_line(*texts: str) -> str:
    for text in texts:
        if lines := [line.strip() for line in text.splitlines() if line.strip()]:
            return lines[-1]
    return ""


def run_case(case: BenchCase, out_dir: Path, cache_dir: Path, weights_dir: Path | None,
             timeout_s: float) -> dict:
    """One case in a subprocess: its outcome, its benchmark record, and its files in out_dir."""
    command = benchmark_command(case, out_dir, cache_dir, weights_dir)
    changes = benchmark_env(case)
    start = time.monotonic()
    code, out, err = run_process(command, _environ(changes), timeout_s)
    entry = {"name": case.name, "seconds": round(time.monotonic() - start, 1),
             "timeout_s": round(timeout_s), "command": shlex.join(command[1:]), "env": changes}
    log = out_dir / f"{case.name}.log"
    log.write_text(f"$ {shlex.join(command)}\n--- stdout\n{out}\n--- stderr\n{err}")
    json_path = out_dir / f"{case.name}.json"
    last = _last_line(err, out)
    if code is None:
        status, reason = "timeout", f"timed out after {timeout_s:.0f}s" + (f": {last}" if last else "")
    elif code != 0:
        status, reason = "failed", last or f"exit code {code}"
    elif not json_path.exists():
        status, reason = "failed", f"no record written ({json_path.name})"
    else:
        status, reason = "ok", None
    entry |= {"status": status, "reason": reason,
              "files": sorted(p.name for p in out_dir.glob(f"{case.name}.*"))}
    if status == "ok":
        entry["record"] = json.loads(json_path.read_text())
    return entry


def _skip_reason(case: BenchCase, left_s: float, done: dict[str, str]) -> str | None:
    if left_s < MIN_START_S:
        return f"budget: {max(left_s, 0):.0f}s left"
    if case.spec.warm and done.get(case.base) != "ok":
        return f"needs {case.base} to have run first in this check"
    if set(case.spec.impls) & TORCH_IMPLS and importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed here (the reference for this case)"
    return None


# --- the record ---

def result_rows(cases: list[dict]) -> list[dict]:
    """Every benchmark result, labelled with its case, precision and gradient kernels."""
    rows = []
    for entry in cases:
        if entry["status"] != "ok":
            continue
        case = BenchCase.parse(entry["name"])
        for result in entry["record"]["results"]:
            rows.append({"case": entry["name"], "variant": case.variant,
                         "precision": case.precision,
                         "kernels": case.spec.kernels or "default", **result})
    return rows


def _key(row: dict) -> tuple:
    return row["mode"], row["size"], row["batch"], row["precision"]


def _by_key(rows: list[dict], variants: tuple[str, ...], label: str) -> dict[tuple, dict[str, dict]]:
    """{(mode, size, batch, precision): {row[label]: row}} over the given variants."""
    groups: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if row["variant"] in variants:
            groups.setdefault(_key(row), {})[row[label]] = row
    return groups


def _fields(key: tuple) -> dict:
    return dict(zip(("mode", "size", "batch", "precision"), key))


def speedups(rows: list[dict]) -> list[dict]:
    """jax's speed over eager torch and torch.compile (median time ratio), default kernels."""
    out = []
    for key, impls in _by_key(rows, ("", "compile"), "impl").items():
        if "jax" in impls:
            out.append({**_fields(key), **{
                f"jax_vs_{impl}": row["median_s"] / impls["jax"]["median_s"]
                for impl, row in impls.items() if impl != "jax"}})
    return out


def kernel_comparison(rows: list[dict]) -> list[dict]:
    """The custom gradients against jax's native ones (DREAM_JAX_KERNELS), same shape."""
    out = []
    for key, pair in _by_key(rows, ("custom", "native"), "variant").items():
        if {"custom", "native"} <= set(pair):
            custom, native = pair["custom"], pair["native"]
            out.append({**_fields(key), "custom_images_per_s": custom["images_per_s"],
                        "native_images_per_s": native["images_per_s"],
                        "custom_vs_native": native["median_s"] / custom["median_s"],
                        "custom_compile_s": custom["compile_s"],
                        "native_compile_s": native["compile_s"]})
    return out


def warm_first_calls(rows: list[dict]) -> list[dict]:
    """The jax first call with the caches a previous case left, next to the cold one."""
    cold = {_key(r): r for r in rows if r["variant"] == "" and r["impl"] == "jax"}
    return [{**_fields(_key(r)), "cold_first_call_s": cold[_key(r)]["compile_s"],
             "warm_first_call_s": r["compile_s"], "steady_median_s": r["median_s"]}
            for r in rows if r["variant"] == "warm" and _key(r) in cold]


def targets(rows: list[dict], speedup_rows: list[dict], warm_rows: list[dict]) -> list[dict]:
    """Issue 13's targets against what was measured (only what was measured)."""
    out = []
    for s in speedup_rows:
        if s["mode"] == "step":
            for impl, goal in (("torch", 2.0), ("torch_compile", 1.2)):
                if f"jax_vs_{impl}" in s:
                    out.append({"target": f"jax >= {goal}x {impl} images/s", **_fields(_key(s)),
                                "measured": s[f"jax_vs_{impl}"], "met": s[f"jax_vs_{impl}"] >= goal})
    for r in rows:  # the large batch: 64 images of 224x224
        if (r["case"], r["impl"]) == ("batch-bf16", "jax") and r["fraction_of_peak"]:
            out.append({"target": "jax >= 35% of the bf16 peak at large batch", **_fields(_key(r)),
                        "measured": r["fraction_of_peak"], "met": r["fraction_of_peak"] >= 0.35})
    for w in warm_rows:
        out.append({"target": "first call of a shape <= 2 s with warm caches", **_fields(_key(w)),
                    "measured": w["warm_first_call_s"], "met": w["warm_first_call_s"] <= 2.0})
    return out


def _kernels_switch_in_library() -> bool:
    """Whether dream_jax reads DREAM_JAX_KERNELS at all (else the custom and native
    cases measure the same code)."""
    package = Path(dream_jax.__file__).resolve().parent
    return any("DREAM_JAX_KERNELS" in p.read_text() for p in package.rglob("*.py"))


def summarize(record: dict) -> dict:
    """The record with the benchmark results merged and compared."""
    rows = result_rows(record["cases"])
    speedup_rows, warm_rows = speedups(rows), warm_first_calls(rows)
    return {**record, "results": rows, "speedups": speedup_rows,
            "kernels": kernel_comparison(rows), "warm_first_calls": warm_rows,
            "targets": targets(rows, speedup_rows, warm_rows)}


# --- markdown ---

def _table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(str, row)) + " |" for row in rows] + [""])


def _num(value, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def _correctness_md(result: dict | None) -> list[str]:
    if result is None:
        return ["Not run (--nocorrectness).", ""]
    rows = []
    for name, check in result["checks"].items():
        if "error" in check:
            rows.append([name, "–", check["error"], "–", "FAIL"])
            continue
        m = check["measured"]
        measured = (f"top-5 {m['top5_accelerator']} vs {m['top5_cpu']}, "
                    f"max abs delta prob {m['max_prob_diff']:.2g}" if "top5_cpu" in m else
                    f"{m['within_2_levels']:.3%} within 2 levels, mean abs delta "
                    f"{m['mean_abs_diff']:.3f}, max {m['max_abs_diff']}")
        request = ", ".join(f"{k}={v}" for k, v in check["request"].items())
        tolerance = ", ".join(f"{k} {v}" for k, v in check["tolerance"].items())
        rows.append([name, request, measured, tolerance, "pass" if check["passed"] else "FAIL"])
    return ([f"{result['accelerator']} against {result['reference']}, {result['precision']}: "
             f"**{'passed' if result['passed'] else 'FAILED'}**", ""]
            + _table(["check", "request", "measured", "tolerance", "result"], rows))


def _results_md(rows: list[dict]) -> list[str]:
    return _table(
        ["case", "impl", "mode", "size", "batch", "precision", "kernels", "compile s", "median s",
         "img/s", "of peak", "device MiB"],
        [[r["case"], r["impl"], r["mode"], r["size"], r["batch"], r["precision"], r["kernels"],
          _num(r["compile_s"], ".1f"), _num(r["median_s"], ".4f"), _num(r["images_per_s"]),
          _num(r["fraction_of_peak"], ".1%"),
          _num(r["peak_device_bytes"] and r["peak_device_bytes"] / 2**20, ".0f")] for r in rows])


def markdown(record: dict) -> str:
    """The record as the tables a reader wants: correctness, speed, comparisons, gaps."""
    check, machine, versions = record["check"], record["machine"], record["versions"]
    lines = [f"# GPU check{' (dry run: CPU, tiny sizes)' if check['dry_run'] else ''}: "
             f"{machine['device_kind']} ({machine['jax_backend']}), {record['date']}", "",
             f"dream_jax {versions.get('dream_jax_commit') or 'commit unknown'}; jax "
             f"{versions['jax']}, torch {versions.get('torch', '–')}; {check['wall_s']:.0f} s "
             f"of a {check['budget_s']:.0f} s budget; {check['steps']} steps per octave, "
             f"median of {check['repeats']}; `{check['command']}`", "",
             "## Correctness (accelerator vs CPU)", "", *_correctness_md(record["correctness"]),
             "## Benchmarks", ""]
    lines += _results_md(record["results"]) if record["results"] else ["No case ran.", ""]
    if record["speedups"]:
        lines += ["## jax speedups (median time ratio, default kernels)", ""] + _table(
            ["mode", "size", "batch", "precision", "jax vs torch", "jax vs torch.compile"],
            [[s["mode"], s["size"], s["batch"], s["precision"], _num(s.get("jax_vs_torch"), ".2f"),
              _num(s.get("jax_vs_torch_compile"), ".2f")] for s in record["speedups"]])
    if record["kernels"]:
        note = "" if check["kernels_switch_in_library"] else (
            " (dream_jax does not read DREAM_JAX_KERNELS: both rows ran the same code)")
        lines += [f"## Custom vs native gradients (DREAM_JAX_KERNELS){note}", ""] + _table(
            ["mode", "size", "batch", "precision", "custom img/s", "native img/s",
             "custom vs native", "compile s custom / native"],
            [[k["mode"], k["size"], k["batch"], k["precision"], _num(k["custom_images_per_s"]),
              _num(k["native_images_per_s"]), _num(k["custom_vs_native"], ".2f"),
              f"{k['custom_compile_s']:.1f} / {k['native_compile_s']:.1f}"]
             for k in record["kernels"]])
    if record["warm_first_calls"]:
        lines += ["## First call with warm caches (jax)", ""] + _table(
            ["mode", "size", "batch", "precision", "cold first call s", "warm first call s",
             "steady s"],
            [[w["mode"], w["size"], w["batch"], w["precision"], _num(w["cold_first_call_s"], ".2f"),
              _num(w["warm_first_call_s"], ".2f"), _num(w["steady_median_s"], ".3f")]
             for w in record["warm_first_calls"]])
    if record["targets"]:
        lines += ["## Issue 13 targets", ""] + _table(
            ["target", "mode", "size", "batch", "precision", "measured", "met"],
            [[t["target"], t["mode"], t["size"], t["batch"], t["precision"],
              _num(t["measured"], ".3g"), "yes" if t["met"] else "no"] for t in record["targets"]])
    missing = [c for c in record["cases"] if c["status"] != "ok"]
    if missing:
        lines += ["## Cases not measured", ""] + _table(
            ["case", "status", "reason"], [[c["name"], c["status"], c["reason"]] for c in missing])
    return "\n".join(lines)


def results_path(record: dict) -> str:
    """Where a session commits the record: benchmarks/results/<date>-<device>.json."""
    device = re.sub(r"[^a-z0-9]+", "-", record["machine"]["device_kind"].lower()).strip("-")
    return f"benchmarks/results/{record['date'][:10]}-{device}.json"


def write(record: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(record))


# --- the check ---

def _prepare_out(out: Path) -> Path:
    try:
        (out / "benchmarks").mkdir(parents=True, exist_ok=True)
        probe = out / ".gpu_check_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to --out {out}: {e.strerror or e}") from e
    return out / "benchmarks"


def _environment() -> dict:
    """Machine, versions, date (the harness's, without its per-precision peak)."""
    env = harness.environment()
    for key in ("peak_flops", "peak_precision"):
        env["machine"].pop(key, None)
    return env


def run_check(out: Path, weights_dir: Path | None = None, dry_run: bool = False,
              budget_s: float = 420, names: list[str] | None = None,
              check_correctness: bool = True, log: Callable[[str], None] = print) -> dict:
    """The whole check; writes (and rewrites, as it goes) the record into `out`."""
    start = time.monotonic()
    cases = plan(dry_run, names)
    bench_dir = _prepare_out(Path(out))
    params = weights.load_params(weights_dir)
    labels = weights.load_labels(weights_dir)
    settings = RUN_SETTINGS[dry_run]
    record = {**_environment(), "check": {
        "dry_run": dry_run, "budget_s": budget_s, "wall_s": 0.0, "command": shlex.join(sys.argv),
        "kernels_switch_in_library": _kernels_switch_in_library(), **settings},
        "correctness": None, "cases": []}

    def save():
        record["check"]["wall_s"] = round(time.monotonic() - start, 1)
        record.update(summarize(record))
        write(record, Path(out))

    if check_correctness:
        log("correctness: accelerator vs CPU ...")
        record["correctness"] = correctness(params, labels, dry_run)
        log(f"correctness: {'passed' if record['correctness']['passed'] else 'FAILED'}")
    save()
    cache_root = Path(tempfile.mkdtemp(prefix="gpu_check_cache_"))
    done: dict[str, str] = {}
    try:
        for case in cases:
            left = budget_s - (time.monotonic() - start)
            if reason := _skip_reason(case, left, done):
                entry = {"name": case.name, "status": "skipped", "reason": reason}
            else:
                log(f"{case.name}: running (timeout {min(case.timeout_s, left):.0f}s) ...")
                cache = cache_root / ("shared" if dry_run else case.spec.cache)
                entry = run_case(case, bench_dir, cache, weights_dir, min(case.timeout_s, left))
            done[case.name] = entry["status"]
            log(f"{case.name}: {entry['status']}"
                + (f" ({entry['reason']})" if entry["reason"] else f" in {entry['seconds']}s"))
            record["cases"].append(entry)
            save()
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)
    return record
