"""Step time of the dream's research options against the plain dream, in one
process: --normalize=lapnorm, a mask, two regions, --optimizer=adam.

  python -m benchmarks.dream_features [--size=512x384] [--steps=10] [--repeats=3]

One octave of `steps` steps on seeded noise, inception_4c/output; each case is
compiled first, then the best of `repeats` warm runs is reported per step.
"""
import time

import numpy as np
from absl import app, flags

import dream_jax
from dream_jax.model import weights

_SIZE = flags.DEFINE_string("size", "512x384", "WIDTHxHEIGHT.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps in the octave.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Warm runs per case (best is reported).")


def cases(height: int, width: int) -> dict:
    right = np.zeros((height, width), np.uint8)
    right[:, width // 2:] = 255
    layer = "inception_4c/output"
    return {
        "plain (mean_abs)": dict(objective=layer),
        "lapnorm": dict(objective=layer, normalize="lapnorm"),
        "mask (1 region)": dict(objective=layer, mask=right),
        "2 regions": dict(regions=[(right, layer), (255 - right, f"channel({layer},3)")]),
        "adam": dict(objective=layer, optimizer="adam"),
    }


def main(argv):
    del argv
    width, height = (int(v) for v in _SIZE.value.split("x"))
    params = weights.load_params()
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    plain = None
    for name, options in cases(height, width).items():
        run = lambda: dream_jax.dream(image, params=params, octave_n=1,  # noqa: E731
                                      iter_n=_STEPS.value, **options)
        run()  # compile
        best = min(_timed(run) for _ in range(_REPEATS.value)) / _STEPS.value
        plain = plain or best
        print(f"{name:18s} {best * 1000:6.0f} ms/step  {best / plain:5.2f}x plain")


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


if __name__ == "__main__":
    app.run(main)
