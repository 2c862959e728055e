"""How closely dream_jax reproduces the original notebook, and tiles the whole image.

  python scripts/agreement.py --input=../shared/data/sky1024px.jpg \
      --steps_at=517x300,1024x575 --dream_at=517x300 --tiles_at=1536x1024:512

Needs torch and scipy (the notebook reference); see benchmarks/agreement.py.
"""
import json
import sys
from pathlib import Path

from absl import flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` is not installed
from benchmarks import agreement  # noqa: E402
from dream_jax import cli  # noqa: E402
from dream_jax.model import weights
from dream_jax.errors import UserError  # noqa: E402

_INPUT = flags.DEFINE_string("input", None, "Photo to compare on (resized to each size).",
                             required=True)
_STEPS_AT = flags.DEFINE_list("steps_at", ["517x300", "1024x575"],
                              "WxH sizes for the one-step comparison with the notebook.")
_DREAM_AT = flags.DEFINE_list("dream_at", ["517x300"],
                              "WxH sizes for the whole default dream (jitter 0) vs the notebook.")
_TILES_AT = flags.DEFINE_list("tiles_at", ["1536x1024:512"], "WxH:TILE tile-vs-whole cases.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_OUT = flags.DEFINE_string("out", None, "Also write the results here as JSON.")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"expected a size WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def main():
    params = weights.load_params(_WEIGHTS.value)
    results = []
    for text in _STEPS_AT.value:
        rgb = agreement.load(_INPUT.value, *_size(text))
        results.append({"case": "notebook_step", **agreement.notebook(params, rgb,
                                                                      **agreement.ONE_STEP)})
    for text in _DREAM_AT.value:
        rgb = agreement.load(_INPUT.value, *_size(text))
        results.append({"case": "notebook_dream",
                        **agreement.notebook(params, rgb, controls=True, jitter=0)})
    for text in _TILES_AT.value:
        size, _, tile = text.partition(":")
        rgb = agreement.load(_INPUT.value, *_size(size))
        results.append({"case": "tiles", **agreement.tiles(params, rgb, int(tile or 512))})
    for result in results:
        print(json.dumps(result))
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    cli.run(main)
