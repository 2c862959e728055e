"""A self-hosted microscope: visualisations, natural exemplars, attributions and
faithfulness scores of every channel, as a static site (open SITE/index.html).

  python scripts/microscope.py --layers=inception_3a/output,inception_3b/output \
      --inputs=photos/ --output_dir=site/ [--channels=0:64|all]
  # rerun the same command to resume after a kill
"""
from absl import flags

from dream_jax.workbench import attribution, microscope
from dream_jax import cli

_D = microscope.Job(layers=("inception_4c/output",))
_LAYERS = flags.DEFINE_list("layers", None, "Comma-separated layers.", required=True)
_INPUTS = flags.DEFINE_string("inputs", None, "A folder, glob or list file of natural images.",
                              required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Existing folder for the site.",
                                  required=True)
_CHANNELS = flags.DEFINE_string("channels", _D.channels, "Per layer: A:B, a comma list or all.")
_SIZE = flags.DEFINE_integer("size", _D.size, "Side of each visualisation.")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Visualisation steps.")
_TOP_K = flags.DEFINE_integer("top_k", _D.top_k, "Exemplars per channel.")
_EX_SIZE = flags.DEFINE_integer("exemplar_size", _D.exemplar_size,
                                "Inputs are resized and centre-cropped to this side.")
_METHOD = flags.DEFINE_enum("method", _D.method, attribution.METHODS,
                            "Attribution method for the exemplars.")
_ATTR_STEPS = flags.DEFINE_integer("attribution_steps", _D.attribution_steps,
                                   "Samples for integrated_gradients and smoothgrad.")
_RANDOM = flags.DEFINE_integer("random_images", _D.random_images,
                               "Natural images the path-similarity score compares with.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Random seed.")
_BATCH = flags.DEFINE_integer("batch", 0, "Visualisations per call; 0: as many as fit memory.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Exemplar images per call.")
_DEVICES = flags.DEFINE_string("devices", "all", "'all' or a count (exemplar mining).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")


def main():
    job = microscope.Job(tuple(_LAYERS.value), _CHANNELS.value, _SIZE.value, _STEPS.value,
                         _TOP_K.value, _EX_SIZE.value, _METHOD.value, _ATTR_STEPS.value,
                         _RANDOM.value, _SEED.value)
    command = (f"python scripts/microscope.py --layers={','.join(job.layers)} --inputs=INPUTS "
               f"--output_dir=SITE --channels={job.channels} --size={job.size} "
               f"--steps={job.steps} --top_k={job.top_k} --exemplar_size={job.exemplar_size} "
               f"--method={job.method} --attribution_steps={job.attribution_steps} "
               f"--random_images={job.random_images} --seed={job.seed}")
    index = microscope.build(job, _INPUTS.value, _OUTPUT_DIR.value, _WEIGHTS.value,
                             devices=_DEVICES.value, batch=_BATCH.value,
                             batch_size=_BATCH_SIZE.value, command=command)
    print(f"wrote {index}")


if __name__ == "__main__":
    cli.run(main)
