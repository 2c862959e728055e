"""Convert GoogLeNet weights into weights/*.safetensors: the published BVLC
GoogLeNet (checked against its known content), or with --allow_unverified any
GoogLeNet-architecture Caffe model with any class count (e.g. Places365).

  python scripts/convert_weights.py --source=../shared/weights/bvlc_googlenet --out=weights/
  python scripts/convert_weights.py --source=https://.../bvlc_googlenet.caffemodel \
      --labels=https://.../synset_words.txt
  python scripts/convert_weights.py --source=googlenet_places365.caffemodel \
      --labels=categories_places365.txt --allow_unverified --out=weights/places365
"""
from absl import flags

from dream_jax import cli
from dream_jax.model.weights import convert, store

_SOURCE = flags.DEFINE_string(
    "source", None, "Path or http(s) URL: a .caffemodel file, or the folder/base URL of the "
    "per-layer raw float32 files (caffejs layout).", required=True)
_OUT = flags.DEFINE_string("out", str(store.default_dir()), "Output folder.")
_LABELS = flags.DEFINE_string(
    "labels", None, "Class names, one line per class in output order (path or URL; default: "
    "synset_words.txt next to the source).")
_UNVERIFIED = flags.DEFINE_bool(
    "allow_unverified", False, "Accept parameters that differ from the published BVLC "
    "GoogLeNet: another GoogLeNet-architecture model (e.g. Places365, any class count) or your "
    "own fine-tuned weights. Shapes, finiteness and the label count are still checked.")


def main():
    manifest = convert.convert(
        _SOURCE.value, _OUT.value, labels=_LABELS.value,
        expected_content_sha256=None if _UNVERIFIED.value else convert.BVLC_GOOGLENET_CONTENT_SHA256)
    print(f"wrote {_OUT.value}/{manifest['file']}: {manifest['parameter_count']:,} parameters, "
          f"{manifest['num_classes']} classes, sha256 {manifest['sha256']}")


if __name__ == "__main__":
    cli.run(main)
