"""One vmapped call for N channels against N separate calls, same settings.

  python benchmarks/visualize_speed.py --n=8 --size=96 --steps=64

Both are compiled (and run once) before timing, so the numbers are steady-state
compute; channels are data, so every call of a shape shares one compilation.
Prints one JSON line. The 512-channel wall time is the script itself:
  time python scripts/visualize.py --channels=all --size=96 --steps=64 --output_dir=DIR
"""
import json
import os
import time

import jax
from absl import app, flags

from dream_jax.vis import visualize
from dream_jax.model import weights

_N = flags.DEFINE_integer("n", 8, "Channels.")
_SIZE = flags.DEFINE_integer("size", 96, "Picture side.")
_STEPS = flags.DEFINE_integer("steps", 64, "Steps.")
_LAYER = flags.DEFINE_string("layer", "inception_4c/output", "Layer.")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Timed runs of each (the best is kept).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder.")


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(_):
    params = jax.device_put(weights.load_params(_WEIGHTS.value))
    settings = visualize.Settings(layer=_LAYER.value, size=_SIZE.value, steps=_STEPS.value)
    channels = tuple(range(_N.value))
    together = lambda: visualize.render_channels(params, settings, channels)
    apart = lambda: [visualize.render_channels(params, settings, (c,)) for c in channels]
    compile_start = time.perf_counter()
    together(), visualize.render_channels(params, settings, (0,))  # compile both shapes
    compile_s = time.perf_counter() - compile_start
    batched, separate = _best(together, _REPEATS.value), _best(apart, _REPEATS.value)
    print(json.dumps({"layer": _LAYER.value, "n": _N.value, "size": _SIZE.value,
                      "steps": _STEPS.value, "vmapped_s": round(batched, 2),
                      "separate_s": round(separate, 2),
                      "separate_over_vmapped": round(separate / batched, 2),
                      "first_calls_incl_compile_s": round(compile_s, 1),
                      "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
                      "backend": jax.default_backend()}))


if __name__ == "__main__":
    app.run(main)
