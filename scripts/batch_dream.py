"""Dream a folder, glob or list file of images, a batch per compiled call; reruns resume.

  python scripts/batch_dream.py --inputs=photos/ --output_dir=dreams/ --batch_size=8
  python scripts/batch_dream.py --inputs=paths.txt --output_dir=dreams/ --devices=all
  python scripts/batch_dream.py --inputs='photos/*.jpg' --output_dir=dreams/ \
      --objective='inception_4c/output;channel(inception_4d/3x3_reduce,139)'
  # one job over several processes or hosts (run each with its own --process_id;
  # in a SLURM array or a Kubernetes Indexed Job the index comes from the scheduler):
  python scripts/batch_dream.py --inputs=photos/ --output_dir=dreams/ \
      --num_processes=2 --process_id=0
  # a process that died: run it again with the same flags; it finishes its share
  # the same job on a Ray cluster (a local one without --ray_address):
  python scripts/batch_dream.py --inputs=photos/ --output_dir=dreams/ --engine=ray
"""
import os
import sys

from absl import flags

from dream_jax.scale import batch, distributed, summary
from dream_jax.engine import inputs as engine_inputs
from dream_jax import cli, objectives
from dream_jax.model import weights
from dream_jax import flags as dream_flags
from dream_jax.errors import UserError, WeightsError

make_request = dream_flags.define_dream_flags()
flags.adopt_module_key_flags(dream_flags)  # --help lists the dream flags
_INPUTS = flags.DEFINE_string(
    "inputs", None, "Folder, glob, or list file (one image path a line, relative to the "
    "list file's folder) of input images.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the PNGs go.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per compiled call (all devices).")
_DEVICES = flags.DEFINE_string("devices", "all",
                               "This process's devices to shard each batch over: 'all' or N.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Processes in the job (default: the scheduler's, "
    f"$SLURM_ARRAY_TASK_COUNT or ${distributed.NUM_PROCESSES_ENV}; else 1).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index, 0..N-1: it dreams inputs i with i mod N == "
    "process_id (default: the scheduler's, $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN or "
    "$JOB_COMPLETION_INDEX).")
_MERGE = flags.DEFINE_string(
    "merge_summaries", None, "Only merge the summary parts in this folder into its "
    "summary.json (what the last process of a job does by itself), then exit.")
_ENGINE = flags.DEFINE_enum("engine", "local", batch.ENGINES,
                            "local: this process dreams its share; ray: the whole job on a "
                            "Ray cluster's actors (pip install 'dream_jax[ray]').")
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "Ray cluster to run on (e.g. ray://head:10001 or auto); default: a "
    "local cluster started for the job.")
_RAY_ACTORS = flags.DEFINE_integer("ray_actors", 1, "Actors in the pool (each holds the "
                                   "weights and compiled octaves).")
_RAY_CPUS = flags.DEFINE_float("ray_cpus_per_actor", 1, "CPUs Ray reserves for each actor.")
_RAY_GPUS = flags.DEFINE_float("ray_gpus_per_actor", 0, "GPUs Ray gives each actor (1 on GPU "
                               "nodes); --devices then picks among them.")
# Accepted and ignored, so that job scripts written for peer-connected processes run.
_DEPRECATED = [flags.DEFINE_string("coordinator_address", None, "Deprecated, ignored."),
               flags.DEFINE_float("join_timeout", None, "Deprecated, ignored."),
               flags.DEFINE_float("peer_timeout", None, "Deprecated, ignored.")]


def _check_classes(request, texts, weights_dir):
    """class(K) out of the model's range is the request's error, not each image's:
    refused at once, from the manifest alone."""
    parsed = engine_inputs.flatten(list(batch.entries(request, texts).values()))
    if not any(isinstance(term, objectives.ClassLogit) for o in parsed for term in o.terms):
        return
    try:
        classes = weights.num_classes(weights_dir)
    except WeightsError:  # missing or bad weights: reported where they are loaded
        return
    for objective in parsed:
        objectives.check_classes(objective, classes)


def _warn_deprecated():
    given = [f"--{f.name}" for f in _DEPRECATED if flags.FLAGS[f.name].present]
    if given:
        print(f"warning: {', '.join(given)} deprecated and ignored: processes no longer "
              f"connect to each other", file=sys.stderr)


def main():
    _warn_deprecated()
    if _MERGE.value:
        merged = summary.merge_folder(_MERGE.value)
        print(f"merged {merged['processes']} parts: done {merged['done']}, skipped "
              f"{merged['skipped']}, failed {len(merged['failed'])}")
        return
    if _INPUTS.value is None or _OUTPUT_DIR.value is None:
        raise UserError("--inputs and --output_dir are required (or --merge_summaries=DIR)")
    environ = os.environ if _ENGINE.value == "local" else {}  # Ray splits its job itself
    share = distributed.share_from(_NUM_PROCESSES.value, _PROCESS_ID.value, environ)
    texts = batch.split_objectives(flags.FLAGS.objective)
    request = make_request(None, texts[0])
    _check_classes(request, texts, make_request.weights_dir.value)
    ray_options = None
    if _ENGINE.value == "ray":
        from dream_jax.scale import ray_engine
        ray_options = ray_engine.RayOptions(_RAY_ADDRESS.value, _RAY_ACTORS.value,
                                            _RAY_CPUS.value, _RAY_GPUS.value)
    summary_ = batch.run_batch(_INPUTS.value, _OUTPUT_DIR.value, request,
                               batch_size=_BATCH_SIZE.value,
                               weights_dir=make_request.weights_dir.value,
                               objective_texts=texts, devices=_DEVICES.value, share=share,
                               engine=_ENGINE.value, ray_options=ray_options)
    where = (f", process {share.process_id} of {share.num_processes}"
             if share.num_processes > 1 else
             f", {summary_['actors']} Ray actor(s)" if "actors" in summary_ else "")
    print(f"{'interrupted: ' if summary_['interrupted'] else ''}done {summary_['done']}, "
          f"skipped {summary_['skipped']} (already there), failed {len(summary_['failed'])} "
          f"in {summary_['seconds']:.1f}s ({summary_['images_per_second']:.2f} images/s on "
          f"{summary_['devices']} device(s){where})")
    if summary_["interrupted"]:
        sys.exit(130)
    if summary_["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
