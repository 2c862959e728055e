"""Dream a folder (or glob) of images, a batch per compiled call; reruns resume.

  python scripts/batch_dream.py --inputs=photos/ --output_dir=dreams/ --batch_size=8
  python scripts/batch_dream.py --inputs='photos/*.jpg' --output_dir=dreams/ \
      --objective='inception_4c/output;channel(inception_4d/3x3_reduce,139)'
"""
import sys

from absl import flags

from dream_jax import batch, cli
from dream_jax import flags as dream_flags

make_request = dream_flags.define_dream_flags()
flags.adopt_module_key_flags(dream_flags)  # --help lists the dream flags
_INPUTS = flags.DEFINE_string("inputs", None, "Folder or glob of input images.", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the PNGs go.", required=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per compiled call.")


def main():
    texts = batch.split_objectives(flags.FLAGS.objective)
    summary = batch.run_batch(_INPUTS.value, _OUTPUT_DIR.value, make_request(None, texts[0]),
                              batch_size=_BATCH_SIZE.value,
                              weights_dir=make_request.weights_dir.value, objective_texts=texts)
    print(f"{'interrupted: ' if summary['interrupted'] else ''}done {summary['done']}, "
          f"skipped {summary['skipped']} (already there), failed {len(summary['failed'])} "
          f"in {summary['seconds']:.1f}s")
    if summary["interrupted"]:
        sys.exit(130)
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
