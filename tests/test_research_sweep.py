"""The research loop: a new channel, neuron, class or weight reuses the compiled
programs (only an objective's structure compiles), in a process and from disk,
with the pixels of a program compiled for that one index."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dream_jax
from dream_jax.engine import compile_cache, deepdream, gradients
from dream_jax import objectives
from dream_jax.model import preprocess
from dream_jax.vis import visualize
from dream_jax.engine.config import DreamConfig
from dream_jax.objectives import ObjectiveError
from tests.conftest import compilations, smooth_photo

LAYER = "inception_3a/output"  # shallow: quick to compile on 2 cores
TWO_OCTAVES = DreamConfig(octave_n=2, iter_n=2)


def _photo(seed=0, size=(64, 80)):
    return smooth_photo(seed, size)


@pytest.fixture
def cache(tmp_path):
    compile_cache.enable(tmp_path)
    yield tmp_path / "exported"
    compile_cache.enable(None)


def _entries(folder):
    return sorted(folder.glob("dream_level-*.jaxexport"))


def test_a_sweep_over_channels_and_weights_compiles_once_per_octave_shape(params, cache):
    image = _photo()
    with compilations() as first:
        base = dream_jax.dream(image, f"channel({LAYER},5) - 0.1*tv()", params,
                               config=TWO_OCTAVES)
    assert first and len(_entries(cache)) == 2  # one program per octave shape
    sweep = [f"channel({LAYER},6) - 0.1*tv()", f"0.5*channel({LAYER},200) - 0.3*tv()",
             f"2*channel({LAYER},0) - 0*tv()"]
    with compilations() as again:
        dreams = [dream_jax.dream(image, text, params, config=TWO_OCTAVES) for text in sweep]
    assert again == [] and len(_entries(cache)) == 2
    for other in dreams:  # each dreamed its own channel
        assert np.abs(other.astype(int) - base).mean() > 1


def test_m_objectives_of_one_structure_dream_in_one_call_and_reuse_it(params, cache):
    image = _photo(1)
    config = TWO_OCTAVES.replace(octave_n=1)
    grid = dream_jax.dream(image, [f"neuron({LAYER},{c},0.3,0.6)" for c in (1, 2, 3)], params,
                           config=config)
    assert grid.shape == (3, 64, 80, 3) and len(_entries(cache)) == 1
    with compilations() as again:
        other = dream_jax.dream(image, [f"neuron({LAYER},{c})" for c in (7, 8, 9)], params,
                                config=config)
    assert again == [] and np.abs(other.astype(int) - grid).mean() > 1


def _never_traced(*args, **kwargs):
    raise AssertionError("the octave was traced again instead of loaded from disk")


def test_a_new_index_in_a_new_process_loads_the_program_from_disk(params, cache, monkeypatch):
    image = _photo(2)
    config = TWO_OCTAVES.replace(octave_n=1)
    dream_jax.dream(image, f"channel_product({LAYER},1,2)", params, config=config)
    (entry,) = _entries(cache)
    compile_cache.enable(cache.parent)  # as a new process: nothing held in memory
    monkeypatch.setattr(compile_cache.export, "export", _never_traced)
    dream_jax.dream(image, f"channel_product({LAYER},30,40)", params, config=config)
    assert _entries(cache) == [entry]


def test_data_indices_give_the_pixels_of_programs_compiled_for_each_index(params):
    texts = [f"neuron({LAYER},5,0.2,0.7) - 0.1*tv() + direction({LAYER},3:1,17:-0.5)",
             f"3*neuron({LAYER},250,0.9,0)"]  # one structure: neuron, tv, direction
    objective_list = [objectives.parse(t) for t in texts]
    images = jnp.asarray(preprocess.to_model(np.stack([_photo(s) for s in range(2)]),
                                             preprocess.DREAM_MEAN_BGR))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(2)])
    static = dict(gradient=gradients.Whole(), config=deepdream.StepConfig.of(TWO_OCTAVES))
    slots = objectives.slots_of(objective_list)
    bound = jax.tree.map(jnp.asarray, objectives.bind(objective_list, slots))
    together = deepdream.dream_octave(params, images, bound, {}, keys, jnp.int32(2),
                                      terms=slots, **static)
    for i, objective in enumerate(objective_list):
        weights = jnp.asarray([objective.weights])  # the indices static: compiled for them
        alone = deepdream.dream_octave(params, images[i:i + 1], weights, {}, keys[i:i + 1],
                                       jnp.int32(2), terms=objective.terms, **static)
        np.testing.assert_array_equal(alone[0], together[i])


def test_out_of_range_indices_are_refused_before_anything_compiles(params):
    with compilations() as seen:
        for text, message in [(f"channel({LAYER},256)", "channel 256 out of range"),
                              (f"direction({LAYER},300:1)", "channel 300 out of range"),
                              ("class(1000)", "this model has 1000 classes")]:
            with pytest.raises(ObjectiveError, match=message):
                dream_jax.dream(_photo(size=(224, 224)), text, params, config=TWO_OCTAVES)
    assert not [name for name in seen if "dream_level" in name or "call" in name]


@pytest.mark.slow
def test_a_class_sweep_compiles_once(params, cache):
    image = _photo(3, size=(224, 224))
    config = DreamConfig(octave_n=1, iter_n=1)
    first = dream_jax.dream(image, "class(1)", params, config=config)
    with compilations() as again:
        others = [dream_jax.dream(image, f"class({k})", params, config=config) for k in (2, 999)]
    assert again == [] and len(_entries(cache)) == 1
    assert all(np.any(other != first) for other in others)


def test_the_visualiser_reuses_its_program_for_channels_seeds_and_extra_indices(params):
    params = jax.device_put(params)
    settings = visualize.Settings(layer=LAYER, size=48, steps=2,
                                  objective_extra="0.5*channel(conv2/norm2,3)")
    first = visualize.render_channels(params, settings, (1, 2))
    other = dataclasses.replace(settings, seed=7, objective_extra="2*channel(conv2/norm2,100)")
    with compilations() as again:
        second = visualize.render_channels(params, other, (40, 41))
    assert again == [] and np.abs(second.astype(int) - first).mean() > 1
