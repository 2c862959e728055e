"""Batch throughput and memory, as a user runs it: whole `batch_dream.py` processes.

  python -m benchmarks.batch_scale rss --counts=80,400 --size=256
  python -m benchmarks.batch_scale devices --count=64 --size=96 --devices=1,2,4
  python -m benchmarks.batch_scale processes --count=64 --size=96 --processes=1,2 \
      [--process_devices=2]
  python -m benchmarks.batch_scale engines --count=200 --size=64 --actors=1,2

Inputs are seeded noise PNGs made in a temp folder. Each run is a fresh process
(fresh output folder, warm compile cache: a first run per case fills it) timed
from its summary.json; peak RSS is the process's own (wait4), so one run's
memory never hides another's. "devices" fakes N CPU devices with XLA_FLAGS;
"processes" runs N local processes of one job (`--num_processes=N
--process_id=I`, no coordinator). "engines" compares, on the same images, 1
and 2 local processes and the Ray engine with 1 and 2 actors (a local Ray
cluster started by each run): images/s over the job's wall time, and peak
memory summed over every process of the job (the Ray head, raylet and actors
included: sampled every 0.2 s, so a shorter peak can be missed); Ray's start-up
overhead is a 1-image Ray run's wall time less a 1-image local run's.
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

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _inputs(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
            folder / f"i{i:05d}.png")
    return folder


def _command(args, inputs: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "batch_dream.py"), f"--inputs={inputs}",
            f"--output_dir={out}", f"--batch_size={args.batch_size}",
            f"--octaves={args.octaves}", f"--steps={args.steps}",
            f"--objective={args.objective}", *(["--weights=" + args.weights] if args.weights
                                               else []), *extra]


def _run(commands: list[list[str]], env: dict) -> list[int]:
    """Run the commands at once; their peak RSS in MiB."""
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                              cwd=ROOT) for c in commands]
    peaks = []
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"error: batch_dream failed: {proc.stderr.read().decode()[-800:]}")
        peaks.append(usage.ru_maxrss // 1024)
    return peaks


def _tree_rss(pids: list[int]) -> int:
    """Bytes resident in these processes and all their descendants now."""
    import psutil  # installed with Ray
    total, seen = 0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                if proc.pid not in seen:
                    seen.add(proc.pid)
                    total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _run_sampled(commands: list[list[str]], env: dict) -> tuple[float, int]:
    """Run the commands at once: (wall seconds, peak summed RSS in MiB)."""
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                              cwd=ROOT) for c in commands]
    peak = 0
    while any(p.poll() is None for p in procs):
        peak = max(peak, _tree_rss([p.pid for p in procs if p.poll() is None]))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    for proc in procs:
        if proc.returncode:
            raise SystemExit(f"error: batch_dream failed: {proc.stderr.read().decode()[-800:]}")
    return wall, peak // 2 ** 20


def _engine_case(args, tmp: Path, inputs: Path, name: str, processes: int = 1,
                 actors: int = 0) -> dict:
    """One engine on `inputs`, twice (the first fills the compile cache)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    for attempt in ("warm-up", "measured"):
        out = tmp / f"{name}-{attempt}"
        if actors:
            commands = [_command(args, inputs, out, "--engine=ray", f"--ray_actors={actors}",
                                 f"--ray_cpus_per_actor={args.ray_cpus_per_actor}")]
        else:
            commands = [_command(args, inputs, out, f"--num_processes={processes}",
                                 f"--process_id={i}") for i in range(processes)]
        wall, peak = _run_sampled(commands, env)
    summary = json.loads((out / "summary.json").read_text())
    return {"case": name, "images": summary["done"], "wall_seconds": round(wall, 2),
            "images_per_second": round(summary["done"] / wall, 2), "peak_rss_mib": peak,
            "summary_seconds": summary["seconds"]}


def _engines(args, tmp: Path) -> None:
    inputs = _inputs(tmp / "in", args.count, args.size)
    cases = [("1-process", 1, 0), ("2-processes", 2, 0),
             *((f"ray-{n}-actors", 1, n) for n in map(int, args.actors.split(",")))]
    for name, processes, actors in cases:
        print(json.dumps(_engine_case(args, tmp, inputs, name, processes, actors)), flush=True)
    one = _inputs(tmp / "one", 1, args.size)
    local = _engine_case(args, tmp, one, "startup-local")
    on_ray = _engine_case(args, tmp, one, "startup-ray", actors=1)
    print(json.dumps({"case": "ray-startup-overhead", "local_wall_seconds": local["wall_seconds"],
                      "ray_wall_seconds": on_ray["wall_seconds"],
                      "overhead_seconds": round(on_ray["wall_seconds"] - local["wall_seconds"],
                                                2)}), flush=True)


def _case(args, tmp: Path, inputs: Path, name: str, devices: int = 1,
          processes: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    results = {}
    for attempt in ("warm-up", "measured"):
        out = tmp / f"{name}-{attempt}"
        if processes == 1:
            commands = [_command(args, inputs, out)]
        else:
            commands = [_command(args, inputs, out, f"--num_processes={processes}",
                                 f"--process_id={i}") for i in range(processes)]
        peaks = _run(commands, env)
        summary = json.loads((out / "summary.json").read_text())
        results = {"case": name, "devices": devices, "processes": processes,
                   "peak_rss_mib": max(peaks), **{k: summary[k] for k in (
                       "done", "seconds", "images_per_second", "dream_seconds",
                       "read_seconds", "write_seconds")}}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["rss", "devices", "processes", "engines"])
    parser.add_argument("--counts", default="80,400")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--process_devices", type=int, default=1,
                        help="fake CPU devices in each process (processes mode)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--octaves", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--objective", default="inception_3a/output")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--actors", default="1,2", help="Ray pool sizes (engines mode)")
    parser.add_argument("--ray_cpus_per_actor", type=float, default=0.5,
                        help="below the CPUs / actors, so Ray Data's own tasks get a CPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.what == "engines":
            _engines(args, tmp)
            return
        if args.what == "rss":
            for count in map(int, args.counts.split(",")):
                inputs = _inputs(tmp / f"in{count}", count, args.size)
                print(json.dumps(_case(args, tmp, inputs, f"{count}-images")), flush=True)
            return
        inputs = _inputs(tmp / "in", args.count, args.size)
        if args.what == "devices":
            for n in map(int, args.devices.split(",")):
                print(json.dumps(_case(args, tmp, inputs, f"{n}-devices", devices=n)), flush=True)
        else:
            for n in map(int, args.processes.split(",")):
                print(json.dumps(_case(args, tmp, inputs, f"{n}-processes", processes=n,
                                       devices=args.process_devices)), flush=True)


if __name__ == "__main__":
    main()
