"""Convert the published BVLC GoogLeNet weights into weights/*.safetensors.

  python scripts/convert_weights.py --source=../shared/weights/bvlc_googlenet --out=weights/
  python scripts/convert_weights.py --source=https://.../bvlc_googlenet.caffemodel \
      --labels=https://.../synset_words.txt
"""
from absl import flags

from dream_jax import cli
from dream_jax.weights import convert, store

_SOURCE = flags.DEFINE_string(
    "source", None, "Path or http(s) URL: a .caffemodel file, or the folder/base URL of the "
    "per-layer raw float32 files (caffejs layout).", required=True)
_OUT = flags.DEFINE_string("out", str(store.default_dir()), "Output folder.")
_LABELS = flags.DEFINE_string(
    "labels", None, "synset_words.txt path or URL (default: next to the source).")
_UNVERIFIED = flags.DEFINE_bool(
    "allow_unverified", False, "Accept parameters that differ from the published BVLC "
    "GoogLeNet (e.g. your own fine-tuned weights). Shapes and finiteness are still checked.")


def main():
    manifest = convert.convert(
        _SOURCE.value, _OUT.value, labels=_LABELS.value,
        expected_content_sha256=None if _UNVERIFIED.value else convert.BVLC_GOOGLENET_CONTENT_SHA256)
    print(f"wrote {_OUT.value}/{manifest['file']}: {manifest['parameter_count']:,} parameters, "
          f"sha256 {manifest['sha256']}")


if __name__ == "__main__":
    cli.run(main)
