"""Batch throughput and memory, as a user runs it: whole `batch_dream.py` processes.

  python -m benchmarks.batch_scale rss --counts=80,400 --size=256
  python -m benchmarks.batch_scale devices --count=64 --size=96 --devices=1,2,4
  python -m benchmarks.batch_scale processes --count=64 --size=96 --processes=1,2 \
      [--process_devices=2]

Inputs are seeded noise PNGs made in a temp folder. Each run is a fresh process
(fresh output folder, warm compile cache: a first run per case fills it) timed
from its summary.json; peak RSS is the process's own (wait4), so one run's
memory never hides another's. "devices" fakes N CPU devices with XLA_FLAGS;
"processes" joins N local processes with jax.distributed on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
            address = f"127.0.0.1:{_free_port()}"
            commands = [_command(args, inputs, out, f"--coordinator_address={address}",
                                 f"--num_processes={processes}", f"--process_id={i}")
                        for i in range(processes)]
        peaks = _run(commands, env)
        summary = json.loads((out / "summary.json").read_text())
        results = {"case": name, "devices": devices, "processes": processes,
                   "peak_rss_mib": max(peaks), **{k: summary[k] for k in (
                       "done", "seconds", "images_per_second", "dream_seconds",
                       "read_seconds", "write_seconds")}}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["rss", "devices", "processes"])
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
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
