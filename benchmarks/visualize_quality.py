"""Does a visualisation maximise its channel? And does diversity spread copies?

  python benchmarks/visualize_quality.py --photos=../shared/data --size=64 --steps=32

For each parameterisation: the pictures of N channels, each channel's mean
activation on its own picture against (a) the same channel's mean over the
photos (224x224) and (b) its mean over the other channels' pictures. Then
copies of one channel with and without `diversity`: Gram-matrix cosine
similarity between copies at the diversity layer, and mean pixel distance.
Prints JSON lines.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from PIL import Image

from dream_jax.model import DEFAULT as NET
from dream_jax.model import weights
from dream_jax import objectives
from dream_jax.vis import parameterize, visualize

_PHOTOS = flags.DEFINE_string("photos", "../shared/data", "Folder of .jpg photos.")
_LAYER = flags.DEFINE_string("layer", "inception_4c/output", "Layer.")
_CHANNELS = flags.DEFINE_string("channels", "0,97,150,227,300,450", "Channels.")
_SIZE = flags.DEFINE_integer("size", 64, "Picture side.")
_STEPS = flags.DEFINE_integer("steps", 32, "Steps.")
_PARAMS = flags.DEFINE_list("params", list(parameterize.NAMES), "Parameterisations.")
_DIVERSITY = flags.DEFINE_string("diversity", "100*diversity(inception_3b/output)",
                                 "Diversity term for the copies experiment ('' skips it).")
_WEIGHTS = flags.DEFINE_string("weights", None, "Converted weights folder.")


def gram_similarity(params, pictures, layer):
    """Mean cosine similarity of the copies' Gram matrices (minus objectives' diversity)."""
    acts = NET.apply(params, visualize.to_model_space(jnp.asarray(pictures) / 255.0),
                           (layer,))
    return float(-objectives.Diversity(layer).contributions(acts).mean())


def main(_):
    params = jax.device_put(weights.load_params(_WEIGHTS.value))
    channels = visualize.parse_channels(_CHANNELS.value, _LAYER.value)
    photos = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR))
                       for p in sorted(Path(_PHOTOS.value).glob("*.jpg"))])
    photo_means = visualize.channel_means(params, photos, _LAYER.value).mean(0)[list(channels)]
    for name in _PARAMS.value:
        settings = visualize.Settings(layer=_LAYER.value, size=_SIZE.value, steps=_STEPS.value,
                                      param=name)
        pictures = visualize.render_channels(params, settings, channels)
        acts = visualize.channel_means(params, pictures, _LAYER.value)[:, list(channels)]
        own = np.diag(acts)
        others = (acts.sum(0) - own) / (len(channels) - 1)
        print(json.dumps({"param": name, "size": _SIZE.value, "steps": _STEPS.value,
                          "own": own.round(1).tolist(), "photos": photo_means.round(2).tolist(),
                          "min_own_over_photos": round(float(np.min(
                              own / np.maximum(photo_means, 0.1))), 1),
                          "min_own_over_other_pictures": round(float(np.min(
                              own / np.maximum(others, 0.1))), 1),
                          "diagonal_is_argmax": bool((acts.argmax(0) == np.arange(len(
                              channels))).all())}))
    if not _DIVERSITY.value:
        return
    div_layer = objectives.parse(_DIVERSITY.value).layers[-1]
    for extra in ("", _DIVERSITY.value):
        settings = visualize.Settings(layer="inception_4a/output", size=48, steps=24, copies=3,
                                      objective_extra=extra)
        pictures = visualize.render_channels(params, settings, (97,))
        f = pictures.astype(np.float32) / 255
        distance = np.mean([np.abs(f[i] - f[j]).mean() for i in range(3) for j in range(i + 1, 3)])
        print(json.dumps({"copies_of": "inception_4a/output:97", "extra": extra,
                          "gram_similarity": round(gram_similarity(params, pictures, div_layer), 3),
                          "mean_pixel_distance": round(float(distance), 4)}))


if __name__ == "__main__":
    app.run(main)
