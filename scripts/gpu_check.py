"""The prepared GPU check: accelerator vs CPU correctness, then the benchmarks.

  make gpu-check GPU_CHECK_OUT=DIR    # PYTHONPATH=. python3 scripts/gpu_check.py --out=DIR
  python scripts/gpu_check.py --dry_run --out=/tmp/check   # CPU, tiny sizes: the whole path
  python scripts/gpu_check.py --cases=batch-bf16-custom,batch-bf16-native --nocorrectness
  python scripts/gpu_check.py --lower_only --platforms=cuda,tpu   # no accelerator needed

Writes DIR/gpu_check.json, DIR/gpu_check.md and DIR/benchmarks/<case>.{json,md,log};
exits 1 when a correctness check failed or a case crashed (timeouts are the
budget's). The logic is in benchmarks/gpu_check.py. `--lower_only` lowers every
compiled program for `--platforms` with jax.export (benchmarks/lowering.py),
prints one line per program and platform, and exits 1 if a platform refused one.
"""
import os
import sys
from pathlib import Path

# Before jax starts a backend: this process only runs the small correctness
# checks, and must leave the GPU's memory to the benchmark subprocesses.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from absl import flags  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not installed
from benchmarks import gpu_check  # noqa: E402
from dream_jax import cli  # noqa: E402

_OUT = flags.DEFINE_string("out", "bench/gpu_check", "Folder for the record (created).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_BUDGET = flags.DEFINE_float("budget_s", 420, "Seconds from the start after which the remaining "
                             "cases are skipped (the check must fit 8 minutes).", lower_bound=0)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "CPU only, tiny sizes, no torch.compile.")
_CASES = flags.DEFINE_list("cases", [], "Only these cases (default: all, most important first): "
                           + ", ".join(gpu_check.ORDER))
_CORRECTNESS = flags.DEFINE_bool("correctness", True, "Compare accelerator and CPU first.")
_LOWER_ONLY = flags.DEFINE_bool("lower_only", False, "Only lower every compiled program for "
                                "--platforms (jax.export; no accelerator needed), write nothing.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cuda", "tpu"], "Platforms for --lower_only.")


def lower_only():
    from benchmarks import lowering
    unknown = sorted(set(_PLATFORMS.value) - set(lowering.PLATFORMS))
    if unknown or not _PLATFORMS.value:
        cli.fail(f"--platforms must name some of {', '.join(lowering.PLATFORMS)}, "
                 f"got {','.join(_PLATFORMS.value)!r}")
    failures = lowering.lower_all(tuple(_PLATFORMS.value))
    if failures:
        cli.fail(f"{len(failures)} program(s) did not lower: {failures[0]}")
    print(f"lowering: every program lowered for {', '.join(_PLATFORMS.value)}")


def main():
    if _LOWER_ONLY.value:
        return lower_only()
    out = Path(_OUT.value)
    record = gpu_check.run_check(out, Path(_WEIGHTS.value) if _WEIGHTS.value else None,
                                 _DRY_RUN.value, _BUDGET.value, _CASES.value, _CORRECTNESS.value)
    statuses = [c["status"] for c in record["cases"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("ok", "failed", "timeout", "skipped")
                       if s in statuses) or "no cases"
    correctness = record["correctness"]
    verdict = "not run" if correctness is None else "passed" if correctness["passed"] else "FAILED"
    print(f"gpu check: correctness {verdict}; cases: {counts}; "
          f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    if not _DRY_RUN.value:
        print(f"commit the record as {gpu_check.results_path(record)}")
    if verdict == "FAILED" or "failed" in statuses:
        cli.fail(f"gpu check: correctness {verdict}, cases: {counts} (see {out / 'gpu_check.md'})")


if __name__ == "__main__":
    cli.run(main)
