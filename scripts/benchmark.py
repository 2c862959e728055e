"""Benchmark dream_jax against the PyTorch reference (eager and torch.compile).

  python scripts/benchmark.py --out=bench/results    # writes bench/results.json and .md
  python scripts/benchmark.py --impl=jax,torch --sizes=224 --batch=1 --steps=5 --repeats=3
  python scripts/benchmark.py --cache=/tmp/c ...  # twice: the 2nd run's compile_s is warm

The logic is in benchmarks/harness.py; see its docstring for what is timed.
"""
import sys
from pathlib import Path

from absl import flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not installed
from benchmarks import harness  # noqa: E402
from dream_jax import cli  # noqa: E402
from dream_jax.engine import config

_IMPL = flags.DEFINE_list("impl", list(harness.IMPLS), f"Implementations: {', '.join(harness.IMPLS)}.")
_SIZES = flags.DEFINE_list("sizes", ["224", "512", "1024"], "Square image sides.")
_BATCH = flags.DEFINE_list("batch", ["1", "8"], "Batch sizes.")
_STEPS = flags.DEFINE_integer("steps", 10, "Gradient steps per octave.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per case, after the first.", lower_bound=1)
_MODE = flags.DEFINE_list("mode", list(harness.MODES),
                          "step: one octave of --steps steps; octave: the whole octave loop.")
_OUT = flags.DEFINE_string("out", "bench/results", "Writes OUT.json and OUT.md.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_PRECISION = flags.DEFINE_enum("precision", "float32", list(config.PRECISIONS),
                               "Network compute dtype for every impl (torch: autocast).")
_KERNELS = flags.DEFINE_enum("kernels", "auto", list(config.KERNELS),
                              "Gradient kernels of the Caffe ops ($DREAM_JAX_KERNELS sets the "
                              "default; see --helpfull of dream.py).")
_CACHE = flags.DEFINE_string(
    "cache", None, "Keep on-disk compilation caches here (default: off, cold compiles); "
    "a second run with the same folder measures a warm process's first call.")


def _ints(flag) -> list[int]:
    try:
        values = [int(v) for v in flag.value]
    except ValueError:
        cli.fail(f"--{flag.name} takes integers, got {','.join(flag.value)}", code=2)
    if not values or min(values) < 1:
        cli.fail(f"--{flag.name} takes integers >= 1, got {','.join(flag.value)}", code=2)
    return values


def main():
    record = harness.run(_IMPL.value, _MODE.value, _ints(_SIZES), _ints(_BATCH), _STEPS.value,
                         _REPEATS.value, Path(_WEIGHTS.value) if _WEIGHTS.value else None,
                         cache_dir=Path(_CACHE.value) if _CACHE.value else None,
                         precision=_PRECISION.value, kernels=_KERNELS.value)
    json_path, md_path = harness.write(record, _OUT.value)
    print(harness.markdown(record))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    cli.run(main)
