"""Attribution map of an objective on a photo: which pixels raise it.

  python scripts/attribute.py --input=cat.jpg --objective='class(281)' \
      --method=integrated_gradients --steps=32 --output=cat_ig.png   # + cat_ig.npy
"""
from absl import flags

from dream_jax.workbench import attribution
from dream_jax import cli
from dream_jax.io import image_io

_INPUT = flags.DEFINE_string("input", None, "Image file (any format Pillow reads).", required=True)
_OBJECTIVE = flags.DEFINE_string("objective", None, "Objective in the grammar, e.g. 'class(281)' "
                                 "or 'channel(inception_4c/output,97)'.", required=True)
_METHOD = flags.DEFINE_enum("method", "integrated_gradients", attribution.METHODS,
                            "Attribution method.")
_OUTPUT = flags.DEFINE_string("output", None, "Overlay PNG; the raw map goes beside it as .npy.",
                              required=True)
_STEPS = flags.DEFINE_integer("steps", 32, "Samples for integrated_gradients and smoothgrad.")
_NOISE = flags.DEFINE_float("noise", 0.15, "SmoothGrad noise, a fraction of the image's range.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed (SmoothGrad noise).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", image_io.DEFAULT_MAX_PIXELS,
                                   "Refuse larger images before decoding.", lower_bound=1)


def main():
    summary = attribution.run(_INPUT.value, _OBJECTIVE.value, _OUTPUT.value, _METHOD.value,
                              _STEPS.value, _NOISE.value, _SEED.value, _WEIGHTS.value,
                              _MAX_PIXELS.value)
    print(f"wrote {summary['overlay']} and {summary['raw']} (map sum {summary['sum']:.4g})")


if __name__ == "__main__":
    cli.run(main)
