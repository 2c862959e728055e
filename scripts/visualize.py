"""Feature visualisation: one picture per channel of a layer, and a contact sheet.

  python scripts/visualize.py --layer=inception_4c/output --channels=0:16 --output_dir=vis/
  python scripts/visualize.py --replay=vis/inception_4c-output_c3.png --output_dir=again/
"""
from pathlib import Path

from absl import flags

from dream_jax import cli
from dream_jax import flags as generated
from dream_jax.vis import visualize
from dream_jax.errors import UserError

_SETTINGS = generated.define_fields(visualize.Settings)
flags.adopt_module_key_flags(generated)  # --help lists them
_CHANNELS = flags.DEFINE_string("channels", "0:8", "A:B (A..B-1), a comma list, or 'all'.")
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
    settings = visualize.Settings(**{name: holder.value for name, holder in _SETTINGS.items()})
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
