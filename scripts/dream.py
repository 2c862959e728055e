"""Dream on one image (or on seeded noise when --input is not given).

  python scripts/dream.py --input=sky.jpg --output=sky_dream.png
  python scripts/dream.py --output=noise.png --objective="channel(inception_4c/output,67)"
  python scripts/dream.py --replay=sky_dream.png --output=again.png
"""
from absl import flags

from dream_jax import cli, render
from dream_jax.flags import define_dream_flags

make_request = define_dream_flags()
_INPUT = flags.DEFINE_string("input", None, "Input image (default: built-in seeded noise).")
_OUTPUT = flags.DEFINE_string("output", "dream.png", "Output PNG (written atomically).")
_REPLAY = flags.DEFINE_string("replay", None, "Re-run the request stored in this dream's PNG.")


def main():
    record = None
    if _REPLAY.value:
        request, record = render.request_from_png(_REPLAY.value)
    else:
        request = make_request(_INPUT.value)
    summary = render.render(request, _OUTPUT.value, weights_dir=make_request.weights_dir.value,
                            replay_record=record)
    print(f"wrote {summary['output']} ({summary['width']}x{summary['height']}) "
          f"in {summary['seconds']:.1f}s")


if __name__ == "__main__":
    cli.run(main)
