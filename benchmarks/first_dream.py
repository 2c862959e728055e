"""Time to the first dream, as a user meets it: whole processes, one run each.

  python -m benchmarks.first_dream --input=photo.png [--rounds=2] [--out=first.json]

Per round: `scripts/dream.py` with an empty cache folder (cold: every octave
compiled), the same again (warm: exported modules and compiled executables
from disk), and the same default dream in eager PyTorch (`torch_dream`). Each is
a fresh interpreter timed from start to exit (imports, weights, dream, PNG).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(command)} failed: {proc.stderr.strip()[-500:]}")
    return seconds, proc.stdout.strip()


def run(photo: str, rounds: int) -> dict:
    results = {"cold_s": [], "warm_s": [], "torch_eager_s": [], "torch_note": ""}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            env = {**os.environ, "DREAM_JAX_CACHE": f"{tmp}/cache{i}"}
            dream = [sys.executable, "scripts/dream.py", f"--input={photo}",
                     f"--output={tmp}/jax.png"]
            results["cold_s"].append(_timed(dream, env)[0])
            results["warm_s"].append(_timed(dream, env)[0])
            seconds, note = _timed([sys.executable, "-m", "benchmarks.torch_dream",
                                    f"--input={photo}", f"--output={tmp}/torch.png"], env)
            results["torch_eager_s"].append(seconds)
            results["torch_note"] = note
    best = {k: min(v) for k, v in results.items() if k.endswith("_s")}
    results["cold_vs_torch"] = best["cold_s"] / best["torch_eager_s"]
    results["warm_vs_torch"] = best["warm_s"] / best["torch_eager_s"]
    results["load_average_1min_at_end"] = os.getloadavg()[0]
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    results = run(str(Path(args.input).resolve()), args.rounds)
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
