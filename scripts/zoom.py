"""Dream, zoom in, dream again: frames as PNGs (and optionally a GIF).

  python scripts/zoom.py --input=sky.jpg --output_dir=zoom/ --frames=30 --zoom=1.05 --gif
"""
import math
import re
from pathlib import Path

from absl import flags
from tqdm import tqdm

from dream_jax import cli, objectives, render, zoom
from dream_jax.engine import inputs
from dream_jax.io import image_io
from dream_jax.model import weights
from dream_jax.errors import UserError
from dream_jax import flags as dream_flags

make_request = dream_flags.define_dream_flags()
flags.adopt_module_key_flags(dream_flags)  # --help lists the dream flags
_INPUT = flags.DEFINE_string("input", None, "First frame (default: built-in seeded noise).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "zoom", "Where frame_0000.png ... go.")
_FRAMES = flags.DEFINE_integer("frames", 10, "Number of frames.")
_ZOOM = flags.DEFINE_float("zoom", 1.05, "Zoom factor between frames (> 1).")
_GIF = flags.DEFINE_bool("gif", False, "Also write zoom.gif from the frames.")


def main():
    request = make_request(_INPUT.value)
    if _FRAMES.value < 1:
        raise UserError(f"frames must be >= 1, got {_FRAMES.value}")
    if not (math.isfinite(_ZOOM.value) and _ZOOM.value > 1):
        raise UserError(f"zoom must be a finite number > 1, got {_ZOOM.value}")
    out_dir = Path(_OUTPUT_DIR.value)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    for i in {0, _FRAMES.value - 1}:  # the names' shortest and longest
        render.check_output(out_dir / f"frame_{i:04d}.png")
    for path in request.files:  # an input among the frames would be overwritten
        if re.fullmatch(r"frame_\d{4,}\.png", Path(path).name) and \
                render.same_file(Path(path).parent, out_dir):
            raise UserError(f"{path}: is in --output_dir among the frames; refusing to "
                            f"overwrite it (choose another --output_dir)")
    digests: dict[str, str] = {}
    first, _ = render.load_input(request, digests)
    guide, masks = render.load_extras(request, digests)
    weights_dir = make_request.weights_dir.value
    classes = weights.num_classes(weights_dir)
    for objective in inputs.flatten([request.entry]):  # before the bar
        objectives.check_classes(objective, classes)
    params, sha = weights.load_params(weights_dir), weights.read_manifest(weights_dir)["sha256"]
    plan = inputs.plan(params, [request.entry], guide, masks)
    frames = []
    for i, frame in enumerate(tqdm(zoom.zoom_frames(
            params, first, plan, request.entry, request.config, request.seed, _FRAMES.value,
            _ZOOM.value), total=_FRAMES.value, unit="frame")):
        image_io.write_png(out_dir / f"frame_{i:04d}.png", frame, None,
                           {**render.metadata(request, sha, digests), "zoom_frame": f"{i} of {_FRAMES.value}, x{_ZOOM.value:g} per frame"})
        frames.append(frame)
    if _GIF.value:
        image_io.write_gif(out_dir / "zoom.gif", frames)
    print(f"wrote {len(frames)} frames to {out_dir}")


if __name__ == "__main__":
    cli.run(main)
