"""absl flags generated from config dataclasses: the dream scripts' from
DreamConfig's fields (plus the request's own), the visualiser's from
visualize.Settings'."""
from __future__ import annotations

import dataclasses

from absl import flags

from dream_jax.io import image_io
from dream_jax import objectives, render
from dream_jax.engine.config import DreamConfig

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_fields(cls, flag_values: flags.FlagValues = flags.FLAGS
                  ) -> dict[str, flags.FlagHolder]:
    """One flag per field of the dataclass `cls`, from its metadata: "help",
    "choices" (an enum) and "flag" (its name; the field's own if absent), with
    the field's default; {field: holder}."""
    holders = {}
    for field in dataclasses.fields(cls):
        meta = field.metadata
        name = meta.get("flag", field.name)
        if meta.get("choices"):
            holders[field.name] = flags.DEFINE_enum(name, field.default, list(meta["choices"]),
                                                    meta["help"], flag_values=flag_values)
        else:
            holders[field.name] = _DEFINE[type(field.default)](
                name, field.default, meta["help"], flag_values=flag_values)
    return holders


def define_dream_flags():
    """Define the flags every dreaming script takes; returns a function that
    turns their values into a DreamRequest for a given input."""
    objective = flags.DEFINE_string(
        "objective", objectives.DEFAULT,
        "What to maximise, e.g. 'inception_4c/output + 0.5*channel(inception_4d/3x3_reduce,139)'. "
        f"Terms: LAYER, {', '.join(signature for signature, _ in objectives.grammar())} "
        "(README: Objectives; feature accentuation: "
        "'channel(inception_4c/output,3) - 0.5*input_distance()').")
    config = define_fields(DreamConfig)
    seed = flags.DEFINE_integer("seed", 0, "Random seed (jitter, default noise).")
    guide = flags.DEFINE_string("guide", None, "Guide image for guide(LAYER) objectives.")
    max_side = flags.DEFINE_integer("max_side", 0, "Downscale inputs to this longer side (0: keep).")
    max_pixels = flags.DEFINE_integer("max_pixels", image_io.DEFAULT_MAX_PIXELS,
                                      "Refuse images with more pixels, before decoding them.")
    noise_size = flags.DEFINE_integer("noise_size", render.DEFAULT_NOISE_SIZE,
                                      "Side of the default noise input (when there is no --input).")
    weights_dir = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")
    mask = flags.DEFINE_string(
        "mask", None, "Dream only where this image is white (black keeps the input, grey "
        "blends); resized to the input.")
    regions = flags.DEFINE_multi_string(
        "region", [], "MASK.png:OBJECTIVE, repeatable: dream OBJECTIVE where MASK is white; "
        "with --mask, --objective is one more region. Pixels in no region keep the input.")

    def request(input_path, objective_text=None) -> render.DreamRequest:
        return render.DreamRequest(
            input=input_path, objective=objective_text or objective.value,
            config=DreamConfig(**{name: holder.value for name, holder in config.items()}),
            seed=seed.value, guide=guide.value, max_side=max_side.value,
            max_pixels=max_pixels.value, noise_size=noise_size.value, mask=mask.value,
            regions=tuple(render.parse_region(r) for r in regions.value))

    request.weights_dir = weights_dir
    return request
