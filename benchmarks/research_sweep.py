"""The research loop's sweep: dream_jax against eager PyTorch, in one process.

  python -m benchmarks.research_sweep --input=../shared/data/sky1024px.jpg [--out=FILE]

The sweep is 8 channels of inception_4c/output, then 4 classes, each a default
dream (4 octaves of 5 steps, `iter_n=5`) of the photo resized to 517x300, as a
notebook user runs it: `dream_jax.dream(rgb, "channel(...)")`, starting from an
empty compile cache, so each structure (channel, class) compiles on its first
call. The calls interleave (dream_jax's call i, then PyTorch's call i) so that
machine noise hits both alike; at the end the first objective runs once more in
each, the dream's steady-state time. Each call pair also records the host's
steal time (benchmarks.host). Prints one line per call and the totals,
and writes a JSON record (default benchmarks/results/research_sweep-DATE-CPU.json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dream_jax
from benchmarks import agreement, harness, host
from benchmarks import torch_reference as ref
from dream_jax.engine import compile_cache
from dream_jax.model import preprocess
from dream_jax.engine.config import DreamConfig
from dream_jax.model.weights import store

LAYER = "inception_4c/output"
CONFIG = DreamConfig(iter_n=5)
RESULTS = Path(__file__).resolve().parent / "results"
_LOW = torch.tensor(-preprocess.DREAM_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
_HIGH = torch.tensor(255.0 - preprocess.DREAM_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)


def torch_ascend(select):
    """torch_reference's step with the objective `select(activation) -> (N,)`:
    its gradient normalised per image by mean |g|, one step, clipped."""
    def ascend(p, images, layer, step_size, precision="float32"):
        act = ref.forward(p, images, (layer,))[layer].float()
        (g,) = torch.autograd.grad(select(act).sum(), images)
        g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
        return torch.clamp(torch.nan_to_num(images.detach() + step_size * g), _LOW, _HIGH)
    return ascend


def sweep(channels, classes) -> list[tuple[str, str, str, object]]:
    """(structure, dream_jax objective text, torch layer, torch objective) per call."""
    calls = [("channel", f"channel({LAYER},{c})", LAYER,
              lambda act, c=c: act[:, c].mean(dim=(1, 2))) for c in channels]
    return calls + [("class", f"class({k})", "loss3/classifier",
                     lambda logits, k=k: logits[:, k]) for k in classes]


def run(photo: str, channels, classes, weights_dir=None, size=(517, 300),
        config: DreamConfig = CONFIG) -> dict:
    """The sweep at `size` (width, height); see the module docstring."""
    rgb = agreement.load(photo, *size)
    params = store.load_params(weights_dir or store.default_dir())
    torch.set_num_threads(harness._cpus())
    tparams = ref.torch_params(params)
    x = torch.from_numpy(np.ascontiguousarray(
        (rgb[..., ::-1] - preprocess.DREAM_MEAN_BGR).transpose(2, 0, 1)[None])).float()

    def jax_call(text):
        start = time.perf_counter()
        dream_jax.dream(rgb, text, params, config=config)
        return time.perf_counter() - start

    def torch_call(layer, select):
        start = time.perf_counter()
        ref.deepdream(tparams, x, layer, torch.Generator().manual_seed(0), config,
                      torch_ascend(select))
        return time.perf_counter() - start

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        compile_cache.enable(cache)  # empty: each structure compiles on its first call
        calls = sweep(channels, classes)
        for kind, text, layer, select in calls:
            steal = host.steal_s()
            rows.append({"structure": kind, "objective": text, "jax_s": jax_call(text),
                         "torch_eager_s": torch_call(layer, select)})
            rows[-1]["host_steal_s"] = host.steal_s() - steal  # both calls: see benchmarks.host
            print(f"{text:32s} dream_jax {rows[-1]['jax_s']:7.2f} s   "
                  f"torch eager {rows[-1]['torch_eager_s']:7.2f} s", flush=True)
        # Each structure's first objective once more: that dream's steady-state time.
        firsts = {call[0]: call for call in reversed(calls)}
        steady = {kind: {"objective": text, "jax_s": jax_call(text),
                         "torch_eager_s": torch_call(layer, select)}
                  for kind, (_, text, layer, select) in firsts.items()}
        compile_cache.enable(None)
    later = [r["jax_s"] / steady[r["structure"]]["jax_s"] for r in rows
             if r["objective"] != steady[r["structure"]]["objective"]]
    totals = {k: sum(r[k] for r in rows) for k in ("jax_s", "torch_eager_s", "host_steal_s")}
    record = {
        "benchmark": "research_sweep", "photo": Path(photo).name, "size": f"{size[0]}x{size[1]}",
        "config": {"octave_n": config.octave_n, "iter_n": config.iter_n}, "calls": rows,
        "steady": steady, "totals": totals,
        "jax_vs_torch_total": totals["jax_s"] / totals["torch_eager_s"],
        "jax_later_calls_vs_steady_max": max(later) if later else None,
        "load_average_1min_at_end": os.getloadavg()[0], **harness.environment()}
    print(f"{'total':32s} dream_jax {totals['jax_s']:7.2f} s   "
          f"torch eager {totals['torch_eager_s']:7.2f} s   "
          f"({record['jax_vs_torch_total']:.2f}x; host steal {totals['host_steal_s']:.1f} s)")
    for s in steady.values():
        print(f"steady {s['objective']}: dream_jax {s['jax_s']:.2f} s, torch eager "
              f"{s['torch_eager_s']:.2f} s")
    if later:
        print(f"slowest later dream_jax call: {max(later):.2f}x its structure's steady time")
    return record


def default_out(record: dict) -> Path:
    cpu = re.sub(r"[^a-z0-9]+", "-", record["machine"]["cpu"].lower()).strip("-")[:40]
    day = datetime.date.today().isoformat()
    return RESULTS / f"research_sweep-{day}-{cpu or 'cpu'}.json"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--channels", default="61,67,68,139,200,300,400,500")
    parser.add_argument("--classes", default="1,76,291,980")
    parser.add_argument("--weights")
    parser.add_argument("--size", default="517x300", help="WIDTHxHEIGHT (the issue's: 517x300).")
    parser.add_argument("--iter_n", type=int, default=CONFIG.iter_n)
    parser.add_argument("--note", default="", help="How the machine was (quiet, shared, ...).")
    parser.add_argument("--out")
    args = parser.parse_args()
    ints = lambda text: [int(v) for v in text.split(",") if v.strip()]  # noqa: E731
    size = tuple(int(v) for v in args.size.lower().split("x"))
    record = run(args.input, ints(args.channels), ints(args.classes), args.weights, size,
                 CONFIG.replace(iter_n=args.iter_n))
    record["note"] = args.note
    out = Path(args.out) if args.out else default_out(record)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
