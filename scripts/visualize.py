"""Feature visualisation: one picture per channel of a layer, and a contact sheet.

  python scripts/visualize.py --layer=inception_4c/output --channels=0:16 --output_dir=vis/
  python scripts/visualize.py --replay=vis/inception_4c-output_c3.png --output_dir=again/
"""
from pathlib import Path

from absl import flags

from dream_jax import cli
from dream_jax.engine import optimizers
from dream_jax.vis import parameterize, transforms, visualize
from dream_jax.errors import UserError

_D = visualize.Settings()
_LAYER = flags.DEFINE_string("layer", _D.layer, "Layer whose channels to visualise.")
_CHANNELS = flags.DEFINE_string("channels", "0:8", "A:B (A..B-1), a comma list, or 'all'.")
_SIZE = flags.DEFINE_integer("size", _D.size, "Side of each picture, pixels.")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Optimisation steps.")
_PARAM = flags.DEFINE_enum("param", _D.param, parameterize.NAMES, "Image parameterisation.")
_OPTIMIZER = flags.DEFINE_string("optimizer", _D.optimizer,
                                 f"One of {', '.join(optimizers.OPTIMIZERS)}.")
_LR = flags.DEFINE_float("learning_rate", _D.learning_rate, "Learning rate.")
_SCHEDULE = flags.DEFINE_string("schedule", _D.schedule,
                                f"One of {', '.join(optimizers.SCHEDULES)}.")
_TRANSFORMS = flags.DEFINE_enum("transforms", _D.transforms, transforms.NAMES,
                                "Robustness transforms.")
_EXTRA = flags.DEFINE_string("objective_extra", "", "Terms added to each channel's objective, "
                             "e.g. '-0.05*tv() + 0.5*diversity(inception_4c/output)'.")
_COPIES = flags.DEFINE_integer("copies", 1, "Pictures per channel (differ with diversity).")
_PRE_RELU = flags.DEFINE_bool("pre_relu", _D.pre_relu, "Maximise channels before their ReLU.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_BATCH = flags.DEFINE_integer("batch", 0, "Pictures per compiled call; 0: as many as fit memory.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "vis", "Folder for the PNGs (created if missing).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
_REPLAY = flags.DEFINE_string("replay", None, "Re-run the picture stored in this PNG.")
_TRANSPARENCY = flags.DEFINE_bool("transparency", False, "Also write each picture's MaCo-style "
                                  "transparency map beside it (<name>_transparency.png/.npy): "
                                  "|gradient| accumulated over the optimisation.")


def _make_output_dir() -> None:
    """Create --output_dir (and its parents) if missing, as dream and batch do."""
    try:
        Path(_OUTPUT_DIR.value).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {_OUTPUT_DIR.value}: "
                        f"{e.strerror or e}") from None


def main():
    if _REPLAY.value:
        _make_output_dir()
        path = visualize.replay(_REPLAY.value, _OUTPUT_DIR.value, _WEIGHTS.value,
                                transparency=_TRANSPARENCY.value)
        print(f"wrote {path}")
        return
    settings = visualize.Settings(
        layer=_LAYER.value, size=_SIZE.value, steps=_STEPS.value, param=_PARAM.value,
        optimizer=_OPTIMIZER.value, learning_rate=_LR.value, schedule=_SCHEDULE.value,
        transforms=_TRANSFORMS.value, objective_extra=_EXTRA.value, seed=_SEED.value,
        copies=_COPIES.value, pre_relu=_PRE_RELU.value)
    channels = visualize.parse_channels(_CHANNELS.value, settings.layer)
    _make_output_dir()
    summary = visualize.run(settings, channels, _OUTPUT_DIR.value, _WEIGHTS.value,
                            batch=_BATCH.value, transparency=_TRANSPARENCY.value,
                            progress=lambda done, total: print(f"{done}/{total} channels"))
    if _TRANSPARENCY.value:
        print(f"wrote {len(summary['files'])} transparency maps")
    print(f"wrote {len(summary['files'])} pictures and {summary['contact_sheet']} "
          f"({summary['chunk']} channels per call)")


if __name__ == "__main__":
    cli.run(main)
