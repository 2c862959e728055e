"""Dream a folder, glob or list file of images, a batch per compiled call; reruns resume.

  python scripts/batch_dream.py --inputs=photos/ --output_dir=dreams/ --batch_size=8
  python scripts/batch_dream.py --inputs=paths.txt --output_dir=dreams/ --devices=all
  python scripts/batch_dream.py --inputs='photos/*.jpg' --output_dir=dreams/ \
      --objective='inception_4c/output;channel(inception_4d/3x3_reduce,139)'
  # one job over several processes or hosts (run each with its own --process_id):
  python scripts/batch_dream.py --inputs=photos/ --output_dir=dreams/ \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0
  # a process that died: run it again with the same flags; it finishes its share
"""
import sys

from absl import flags

from dream_jax import batch, cli, distributed, objectives, weights
from dream_jax import flags as dream_flags
from dream_jax.errors import UserError, WeightsError

make_request = dream_flags.define_dream_flags()
flags.adopt_module_key_flags(dream_flags)  # --help lists the dream flags
_INPUTS = flags.DEFINE_string(
    "inputs", None, "Folder, glob, or list file (one image path a line, relative to the "
    "list file's folder) of input images.", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the PNGs go.", required=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per compiled call (all devices).")
_DEVICES = flags.DEFINE_string("devices", "all",
                               "This process's devices to shard each batch over: 'all' or N.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0, to join a multi-process job "
    "(jax's coordination service, which process 0 starts there).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0..N-1.")
_JOIN_TIMEOUT = flags.DEFINE_float(
    "join_timeout", 120, "Seconds to wait for the job's other processes (process 0: for all of "
    "them to join; the others: for process 0's coordinator) before dreaming this process's "
    "share alone.")
_PEER_TIMEOUT = flags.DEFINE_float(
    "peer_timeout", 300, "Process 0, its share done: seconds to wait for a process that died "
    "to be restarted (with the same flags) and finish its share, before exiting with an error.")


def _check_classes(texts, weights_dir):
    """class(K) out of the model's range is the request's error, not each image's:
    refused at once, from the manifest alone."""
    parsed = [objectives.parse(text) for text in texts]
    if not any(isinstance(term, objectives.ClassLogit) for o in parsed for term in o.terms):
        return
    try:
        classes = weights.num_classes(weights_dir)
    except WeightsError:  # missing or bad weights: reported when they are needed, as before
        return
    for objective in parsed:
        objectives.check_classes(objective, classes)


def main():
    if flags.FLAGS.mask or flags.FLAGS.region:
        raise UserError("batch_dream does not take --mask or --region (masks are per image); "
                        "use scripts/dream.py")
    if _PEER_TIMEOUT.value < 0:
        raise UserError(f"--peer_timeout must be >= 0 seconds, got {_PEER_TIMEOUT.value:g}")
    share = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                   join_timeout=_JOIN_TIMEOUT.value)
    texts = batch.split_objectives(flags.FLAGS.objective)
    _check_classes(texts, make_request.weights_dir.value)
    summary = batch.run_batch(_INPUTS.value, _OUTPUT_DIR.value, make_request(None, texts[0]),
                              batch_size=_BATCH_SIZE.value,
                              weights_dir=make_request.weights_dir.value, objective_texts=texts,
                              devices=_DEVICES.value, share=share,
                              peer_timeout=_PEER_TIMEOUT.value)
    where = (f", process {share.process_id} of {share.num_processes}"
             if share.num_processes > 1 else "")
    print(f"{'interrupted: ' if summary['interrupted'] else ''}done {summary['done']}, "
          f"skipped {summary['skipped']} (already there), failed {len(summary['failed'])} "
          f"in {summary['seconds']:.1f}s ({summary['images_per_second']:.2f} images/s on "
          f"{summary['devices']} device(s){where})")
    if summary["interrupted"]:
        sys.exit(130)
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
