"""Compiled octaves: exported modules on disk give the same pixels, are reused without
tracing, rebuilt when damaged; only the caller turns the disk caches on."""
import hashlib
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from absl import logging

import dream_jax
from dream_jax.engine import compile_cache
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError
from tests.conftest import QUICK_LAYER as LAYER, smooth_photo as _photo

pytestmark = pytest.mark.slow

CONFIG = DreamConfig(octave_n=1, iter_n=3)


@pytest.fixture
def cache(tmp_path):
    compile_cache.enable(tmp_path)
    yield tmp_path
    compile_cache.enable(None)


def _dream(params, size=(96, 112), config=CONFIG):
    return dream_jax.dream(_photo(size=size), LAYER, params, config=config, seed=4)


def _never_traced(*args, **kwargs):
    raise AssertionError("the step was traced again instead of loaded from disk")


def test_cached_steps_dream_the_same_pixels_and_load_without_tracing(params, cache, monkeypatch):
    compile_cache.enable(None)
    plain = _dream(params)
    compile_cache.enable(cache)
    np.testing.assert_array_equal(_dream(params), plain)
    (entry,) = (cache / "exported").glob("dream_level-*.jaxexport")
    compile_cache.enable(cache)  # as a new process: nothing held in memory
    monkeypatch.setattr(compile_cache.export, "export", _never_traced)
    np.testing.assert_array_equal(_dream(params), plain)
    assert list((cache / "exported").glob("*.jaxexport")) == [entry]


def test_shapes_configs_and_source_edits_get_their_own_entries(params, cache, monkeypatch):
    _dream(params)
    _dream(params, size=(80, 112))
    _dream(params, config=CONFIG.replace(step_size=2.0))
    assert len(list((cache / "exported").glob("*.jaxexport"))) == 3
    monkeypatch.setattr(compile_cache, "_source_digest", lambda: "an edited dream_jax")
    _dream(params)
    assert len(list((cache / "exported").glob("*.jaxexport"))) == 4


def _signed_garbage(_):
    garbage = b"not an exported module"
    return hashlib.sha256(garbage).digest() + garbage


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b[:40] + b"x" + b[41:],
                                    _signed_garbage])
def test_a_damaged_entry_is_rebuilt_not_trusted(params, cache, damage, monkeypatch):
    expected = _dream(params)
    (entry,) = (cache / "exported").glob("*.jaxexport")
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    compile_cache.enable(cache)
    np.testing.assert_array_equal(_dream(params), expected)
    assert entry.read_bytes() == good
    assert any("rebuilding" in w for w in warnings), warnings


def test_an_unwritable_cache_costs_speed_not_the_dream(params, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    compile_cache.enable(blocker)
    try:
        out = _dream(params)
    finally:
        compile_cache.enable(None)
    assert out.shape == (96, 112, 3)


def test_a_step_jax_cannot_export_runs_uncached(params, cache, monkeypatch):
    expected = _dream(params)
    compile_cache.enable(cache)
    for entry in (cache / "exported").glob("*.jaxexport"):
        entry.unlink()

    def refuse(*args, **kwargs):
        raise ValueError("custom call not allowed in export")

    monkeypatch.setattr(compile_cache.export, "export", refuse)
    np.testing.assert_array_equal(_dream(params), expected)
    assert not list((cache / "exported").glob("*.jaxexport"))


def test_the_api_leaves_jax_configuration_alone(params, tmp_path, monkeypatch):
    """A library call reads no environment variable and changes no jax setting:
    only the caller (a script, or `enable`) turns the disk caches on."""
    compile_cache.enable(None)
    monkeypatch.setenv("DREAM_JAX_CACHE", str(tmp_path / "c"))
    _dream(params, size=(88, 104))
    assert not (tmp_path / "c").exists()
    assert compile_cache._folder is None and jax.config.jax_compilation_cache_dir is None


def test_the_scripts_folder_comes_from_the_environment_they_pass(tmp_path):
    home = Path.home() / ".cache" / "dream_jax"
    assert compile_cache.default_folder({}) == home
    assert compile_cache.default_folder({"DREAM_JAX_CACHE": str(tmp_path)}) == tmp_path
    assert compile_cache.default_folder({"DREAM_JAX_CACHE": "OFF"}) is None


def test_compile_ahead_gets_every_octave_up_front(params, monkeypatch):
    submitted = []
    original = compile_cache.compile_ahead

    def spy(jitted, calls):
        submitted.extend(calls)
        return original(jitted, calls)
    monkeypatch.setattr(compile_cache, "compile_ahead", spy)
    dream_jax.dream(_photo(size=(96, 112)), LAYER, params, config=CONFIG.replace(octave_n=3))
    shapes = [args[1].shape[1:3] for _, args in submitted]
    assert shapes == [(49, 57), (69, 80), (96, 112)]


def test_compile_ahead_traces_in_order_one_at_a_time(monkeypatch):
    """Octaves are traced in the order given and never two at once (tracing holds
    the GIL: so the first octave needed is the first compiled); an error while
    tracing reaches the caller's future."""
    traced, tracing = [], []

    def lower(jitted, static, args):
        tracing.append(args)
        assert len(tracing) == 1, "two traces at once"
        time.sleep(0.02)
        traced.append(args[0])
        tracing.pop()
        if args[0] == "too big":
            raise UserError("too big")
        return str(args), f"compiled {args[0]}"
    monkeypatch.setattr(compile_cache, "_lower", lower)
    futures = compile_cache.compile_ahead(len, [({}, (i,)) for i in range(5)])
    assert [f.result() for f in futures] == [f"compiled {i}" for i in range(5)]
    assert traced == list(range(5))
    (future,) = compile_cache.compile_ahead(len, [({}, ("too big",))])
    with pytest.raises(UserError, match="too big"):
        future.result()
