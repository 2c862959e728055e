"""The on-disk cache of exported dream steps: same pixels, reused, rebuilt when damaged."""
import dataclasses
import hashlib

import numpy as np
import pytest
from absl import logging

from dream_jax import dream, export_cache
from tests.test_dream import FAST, LAYER, _photo

pytestmark = pytest.mark.slow  # every test dreams and reads or writes the cache

CONFIG = dataclasses.replace(FAST, iter_n=3)


@pytest.fixture
def cache(tmp_path):
    export_cache.enable(tmp_path)
    yield tmp_path
    export_cache.enable(None)


def _dream(params, size=(96, 112), config=CONFIG):
    return dream.dream(_photo(size=size), LAYER, params, config=config, seed=4)


def _never_traced(*args, **kwargs):
    raise AssertionError("the step was traced again instead of loaded from disk")


def test_cached_steps_dream_the_same_pixels_and_load_without_tracing(params, cache, monkeypatch):
    export_cache.enable(None)
    plain = _dream(params)
    export_cache.enable(cache)
    np.testing.assert_array_equal(_dream(params), plain)
    (entry,) = cache.glob("dream_octave-*.jaxexport")
    export_cache.enable(cache)  # as a new process: nothing held in memory
    monkeypatch.setattr(export_cache.export, "export", _never_traced)
    np.testing.assert_array_equal(_dream(params), plain)
    assert list(cache.glob("*.jaxexport")) == [entry]


def test_shapes_configs_and_source_edits_get_their_own_entries(params, cache, monkeypatch):
    _dream(params)
    _dream(params, size=(80, 112))
    _dream(params, config=dataclasses.replace(CONFIG, step_size=2.0))
    assert len(list(cache.glob("*.jaxexport"))) == 3
    monkeypatch.setattr(export_cache, "_source_digest", lambda: "an edited dream_jax")
    _dream(params)
    assert len(list(cache.glob("*.jaxexport"))) == 4


def _signed_garbage(_):
    garbage = b"not an exported module"
    return hashlib.sha256(garbage).digest() + garbage


@pytest.mark.parametrize("damage", [lambda b: b[:len(b) // 2], lambda b: b[:40] + b"x" + b[41:],
                                    _signed_garbage])
def test_a_damaged_entry_is_rebuilt_not_trusted(params, cache, damage, monkeypatch):
    expected = _dream(params)
    (entry,) = cache.glob("*.jaxexport")
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    export_cache.enable(cache)
    np.testing.assert_array_equal(_dream(params), expected)
    assert entry.read_bytes() == good
    assert any("rebuilding" in w for w in warnings), warnings


def test_an_unwritable_cache_costs_speed_not_the_dream(params, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    export_cache.enable(blocker / "exported")
    try:
        out = _dream(params)
    finally:
        export_cache.enable(None)
    assert out.shape == (96, 112, 3)


def test_a_step_jax_cannot_export_runs_uncached(params, cache, monkeypatch):
    expected = _dream(params)
    export_cache.enable(cache)
    for entry in cache.glob("*.jaxexport"):
        entry.unlink()

    def refuse(*args, **kwargs):
        raise ValueError("custom call not allowed in export")

    monkeypatch.setattr(export_cache.export, "export", refuse)
    np.testing.assert_array_equal(_dream(params), expected)
    assert not list(cache.glob("*.jaxexport"))
