"""Time to the first dream, as a user meets it: whole processes, one run each.

  python -m benchmarks.first_dream --input=photo.png [--rounds=2] [--out=first.json]
      [--jax_python=.venv-py312/bin/python ...]

Per round, interleaved: for each dream_jax interpreter (this one, and each
`--jax_python`, e.g. another jax release in another venv), `scripts/dream.py`
with an empty cache folder (cold: every octave compiled), then the same again
(warm: exported modules and compiled executables from disk); then the same
default dream in eager PyTorch (`torch_dream`, this interpreter). Each is a
fresh interpreter timed from start to exit (imports, weights, dream, PNG).
Ratios: best against best PyTorch, and the median over rounds of each round's
time against that round's PyTorch. Each process's CPU seconds (its own and its
children's) and the host's steal time while it ran (CPU time the hypervisor
gave to other guests, from /proc/stat) are recorded beside its wall time: on
a shared host the steal says which rounds were disturbed, and CPU seconds move
less with scheduling than wall time does.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import host

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(command: list[str], env: dict) -> tuple[dict, str]:
    """({"s": wall, "cpu_s": CPU, "steal_s": host steal}, stdout) of one process."""
    cpu, steal, start = _children_cpu_s(), host.steal_s(), time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(command)} failed: {proc.stderr.strip()[-500:]}")
    return {"s": seconds, "cpu_s": _children_cpu_s() - cpu,
            "steal_s": host.steal_s() - steal}, proc.stdout.strip()


def _append(entry: dict, name: str, measured: dict) -> None:
    for suffix, value in measured.items():
        entry.setdefault(f"{name}_{suffix}", []).append(value)


def _jax_version(python: str) -> str:
    return subprocess.run([python, "-c", "import jax; print(jax.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def run(photo: str, rounds: int, jax_pythons: list[str]) -> dict:
    pythons = [sys.executable, *jax_pythons]
    labels = [f"jax {_jax_version(p)}" for p in pythons]
    results = {"torch_note": "", "load_average_1min_at_start": os.getloadavg()[0],
               **{label: {} for label in labels}}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for j, (python, label) in enumerate(zip(pythons, labels)):
                env = {**os.environ, "DREAM_JAX_CACHE": f"{tmp}/cache{i}-{j}"}
                dream = [python, "scripts/dream.py", f"--input={photo}", f"--output={tmp}/jax.png"]
                _append(results[label], "cold", _timed(dream, env)[0])
                _append(results[label], "warm", _timed(dream, env)[0])
            measured, note = _timed([sys.executable, "-m", "benchmarks.torch_dream",
                                     f"--input={photo}", f"--output={tmp}/torch.png"],
                                    dict(os.environ))
            _append(results, "torch_eager", measured)
            results["torch_note"] = note
    torch_best = min(results["torch_eager_s"])
    for label in labels:
        entry = results[label]
        for kind in ("cold", "warm"):
            entry[f"{kind}_vs_torch"] = min(entry[f"{kind}_s"]) / torch_best
            # Each round against that round's PyTorch run: a host whose speed
            # drifts between rounds moves these less than the best-of ratio.
            per_round = [a / b for a, b in zip(entry[f"{kind}_s"], results["torch_eager_s"])]
            entry[f"{kind}_vs_torch_per_round"] = per_round
            entry[f"{kind}_vs_torch_median_round"] = statistics.median(per_round)
            entry[f"{kind}_cpu_vs_torch_median_round"] = statistics.median(
                a / b for a, b in zip(entry[f"{kind}_cpu_s"], results["torch_eager_cpu_s"]))
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--jax_python", action="append", default=[],
                        help="Another interpreter whose dream_jax/jax to time as well.")
    args = parser.parse_args()
    results = run(str(Path(args.input).resolve()), args.rounds, args.jax_python)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
