"""absl flags shared by the dream scripts, defaults = the original notebook's."""
from absl import flags

from dream_jax import dream, image_io, objectives, render

_DEFAULTS = dream.DreamConfig()


def define_dream_flags():
    """Define the flags every dreaming script takes; returns a function that
    turns their values into a DreamRequest for a given input."""
    objective = flags.DEFINE_string(
        "objective", objectives.DEFAULT,
        "What to maximise, e.g. 'inception_4c/output + 0.5*channel(inception_4d/3x3_reduce,139)'. "
        "Terms: LAYER, l2(LAYER), mean(LAYER), channel(LAYER,C), neuron(LAYER,C[,Y,X]), "
        "class(K), guide(LAYER).")
    octaves = flags.DEFINE_integer("octaves", _DEFAULTS.octave_n, "Number of octaves (octave_n).")
    octave_scale = flags.DEFINE_float("octave_scale", _DEFAULTS.octave_scale,
                                      "Size ratio between octaves (> 1).")
    steps = flags.DEFINE_integer("steps", _DEFAULTS.iter_n, "Gradient steps per octave (iter_n).")
    step_size = flags.DEFINE_float("step_size", _DEFAULTS.step_size, "Step size.")
    jitter = flags.DEFINE_integer("jitter", _DEFAULTS.jitter, "Random roll per step, in pixels.")
    tile_size = flags.DEFINE_integer("tile_size", _DEFAULTS.tile_size,
                                     "Larger images get their gradient tile by tile.")
    normalize = flags.DEFINE_enum("normalize", _DEFAULTS.normalize, list(dream.NORMALIZERS),
                                  "Gradient normalisation: mean |g| (original) or std (TF tutorial).")
    bucket = flags.DEFINE_integer(
        "bucket", _DEFAULTS.bucket, "Pad image sizes up to a multiple of this so nearby sizes "
        "share one compiled step (0: exact sizes). Results differ slightly from exact sizes.")
    precision = flags.DEFINE_enum(
        "precision", _DEFAULTS.precision, list(dream.PRECISIONS),
        "The network's compute dtype: bfloat16 is for GPUs/TPUs (slower on CPU); the image "
        "and its updates stay float32.")
    seed = flags.DEFINE_integer("seed", 0, "Random seed (jitter, tile offsets, default noise).")
    guide = flags.DEFINE_string("guide", None, "Guide image for guide(LAYER) objectives.")
    max_side = flags.DEFINE_integer("max_side", 0, "Downscale inputs to this longer side (0: keep).")
    max_pixels = flags.DEFINE_integer("max_pixels", image_io.DEFAULT_MAX_PIXELS,
                                      "Refuse images with more pixels, before decoding them.")
    noise_size = flags.DEFINE_integer("noise_size", render.DEFAULT_NOISE_SIZE,
                                      "Side of the default noise input (when there is no --input).")
    weights_dir = flags.DEFINE_string("weights", None, "Converted weights folder (default: weights/).")

    def request(input_path, objective_text=None) -> render.DreamRequest:
        return render.DreamRequest(
            input=input_path, objective=objective_text or objective.value,
            config=dream.DreamConfig(
                octave_n=octaves.value, octave_scale=octave_scale.value, iter_n=steps.value,
                step_size=step_size.value, jitter=jitter.value, tile_size=tile_size.value,
                normalize=normalize.value, bucket=bucket.value, precision=precision.value),
            seed=seed.value, guide=guide.value, max_side=max_side.value,
            max_pixels=max_pixels.value, noise_size=noise_size.value)

    request.weights_dir = weights_dir
    return request
