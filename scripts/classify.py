"""Print the top-k classes of an image (ImageNet's, or those of the model in --weights).

  python scripts/classify.py --input=cat.jpg [--top_k=5] [--json] [--weights=DIR]
"""
import json

from absl import flags

from dream_jax.model import classify, weights
from dream_jax import cli
from dream_jax.io import image_io
from dream_jax.errors import UserError

_INPUT = flags.DEFINE_string("input", None, "Image file (any format Pillow reads).", required=True)
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many classes to print (at most the model's "
                              "class count).", lower_bound=1)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON array and nothing else.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", image_io.DEFAULT_MAX_PIXELS,
                                   "Refuse larger images before decoding.", lower_bound=1)


def main():
    rgb, _ = image_io.read_image(_INPUT.value, _MAX_PIXELS.value)
    # The class count is the converted model's (its manifest), checked before the weights load.
    classes = weights.num_classes(_WEIGHTS.value)
    if _TOP_K.value > classes:
        raise UserError(f"--top_k={_TOP_K.value}: this model has {classes} classes")
    params = weights.load_params(_WEIGHTS.value)
    top = classify.classify(params, rgb, weights.load_labels(_WEIGHTS.value), _TOP_K.value)
    if _JSON.value:
        print(json.dumps(top))
    else:
        for rank, entry in enumerate(top, 1):
            print(f"{rank}. {entry['prob']:7.2%}  {entry['label']}  (class {entry['index']})")


if __name__ == "__main__":
    cli.run(main)
