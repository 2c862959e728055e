"""Dream on one image (or on seeded noise when --input is not given).

  python scripts/dream.py --input=sky.jpg --output=sky_dream.png
  python scripts/dream.py --output=noise.png --objective="channel(inception_4c/output,67)"
  python scripts/dream.py --input=sky.jpg --mask=sky_mask.png --output=masked.png
  python scripts/dream.py --input=sky.jpg --region=top.png:inception_4c/output \
      --region=bottom.png:"channel(inception_4c/output,3)" --output=regions.png
  python scripts/dream.py --input=sky.jpg --output=accent.png \
      --objective="channel(inception_4c/output,3) - 0.5*input_distance()"
  python scripts/dream.py --replay=sky_dream.png --output=again.png [--input=sky.jpg]
"""
from absl import flags

from dream_jax import cli, render
from dream_jax import flags as dream_flags

make_request = dream_flags.define_dream_flags()
flags.adopt_module_key_flags(dream_flags)  # --help lists the dream flags
_INPUT = flags.DEFINE_string("input", None, "Input image (default: built-in seeded noise).")
_OUTPUT = flags.DEFINE_string("output", "dream.png", "Output PNG (written atomically).")
_REPLAY = flags.DEFINE_string(
    "replay", None, "Re-run the request stored in this dream's PNG, with --input (or the "
    "recorded file name found beside the PNG or in the working directory), sha256-checked.")


def main():
    record = None
    if _REPLAY.value:
        request, record = render.request_from_png(_REPLAY.value, _INPUT.value,
                                                  flags.FLAGS.guide, flags.FLAGS.mask)
    else:
        request = make_request(_INPUT.value)
    summary = render.render(request, _OUTPUT.value, weights_dir=make_request.weights_dir.value,
                            replay_record=record)
    print(f"wrote {summary['output']} ({summary['width']}x{summary['height']}) "
          f"in {summary['seconds']:.1f}s")


if __name__ == "__main__":
    cli.run(main)
