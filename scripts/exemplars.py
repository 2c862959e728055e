"""Natural exemplars: for every channel of each layer, the images that drive it most.

  python scripts/exemplars.py --layer=inception_4c/output --inputs=photos/ \
      --output_dir=ex/ [--top_k=9] [--batch_size=16] [--devices=all]
  # ex/exemplars.json and ex/patches/; rerun the same command to resume after a kill
"""
from absl import flags

from dream_jax import cli
from dream_jax.workbench import exemplars
from dream_jax.io import image_io
from dream_jax.model import weights

_LAYER = flags.DEFINE_multi_string("layer", None, "Layer to mine (repeatable).", required=True)
_INPUTS = flags.DEFINE_string("inputs", None, "A folder, a glob or a list file of images.",
                              required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Existing folder for the results.",
                                  required=True)
_TOP_K = flags.DEFINE_integer("top_k", 9, "Exemplars kept per channel.")
_SIZE = flags.DEFINE_integer("size", 224, "Images are resized and centre-cropped to this side.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per compiled call.")
_DEVICES = flags.DEFINE_string("devices", "all", "'all' or a count: devices sharing a batch.")
_PATCHES = flags.DEFINE_bool("patches", True, "Write each exemplar's receptive-field patch.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", image_io.DEFAULT_MAX_PIXELS,
                                   "Refuse larger images before decoding.", lower_bound=1)


def main():
    settings = exemplars.Settings(tuple(_LAYER.value), _TOP_K.value, _SIZE.value)
    sha = weights.read_manifest(_WEIGHTS.value)["sha256"]
    record = exemplars.mine(weights.load_params(_WEIGHTS.value), _INPUTS.value,
                            _OUTPUT_DIR.value, settings, _BATCH.value, _DEVICES.value,
                            weights_sha256=sha, max_pixels=_MAX_PIXELS.value,
                            patches=_PATCHES.value, log=print)
    rate = record["images"] / record["mining_seconds"] if record["mining_seconds"] else 0.0
    print(f"{record['images']} images ({len(record['failed'])} skipped): mined in "
          f"{record['mining_seconds']:.1f} s ({rate:.1f} images/s), {record['seconds']:.1f} s "
          f"with the patches; wrote {_OUTPUT_DIR.value}/{exemplars.RESULT_FILE}")

if __name__ == "__main__":
    cli.run(main)
