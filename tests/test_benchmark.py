"""scripts/benchmark.py end to end on a tiny case: the record's schema and numbers."""
import json
import math

import pytest

from tests.conftest import TORCH_ABSENT, assert_one_line_error, run_main, run_script

pytest.importorskip("torch", reason=TORCH_ABSENT)

from dream_jax.model import googlenet  # noqa: E402


def conv_flops(height: int, width: int, layer: str = "inception_4c/output") -> int:
    """Forward FLOPs (2 per multiply-add) of every convolution up to `layer`."""
    shapes, last = googlenet.layer_shapes(height, width), googlenet.LAYERS.index(layer)
    total = 0
    for name, leaves in googlenet.param_shapes().items():
        if len(leaves["kernel"]) == 4 and googlenet.LAYERS.index(name) <= last:
            kh, kw, cin, cout = leaves["kernel"]
            oh, ow, _ = shapes[name]
            total += 2 * oh * ow * kh * kw * cin * cout
    return total


POSITIVE = ("compile_s", "median_s", "min_s", "max_s", "per_step_s", "images_per_s",
            "megapixels_per_s", "peak_rss_bytes", "flops", "flops_per_s")


@pytest.mark.slow
def test_tiny_benchmark_writes_a_complete_record(weights_dir, tmp_path):
    out = tmp_path / "bench" / "results"
    proc = run_script("benchmark", "--sizes=64", "--batch=1", "--steps=2", "--repeats=2",
                      "--impl=jax,torch", "--mode=step", f"--weights={weights_dir}",
                      f"--out={out}", timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {"machine", "versions", "date", "command", "settings", "results", "speedups"} <= set(record)
    assert record["machine"]["cpu_count"] >= 1 and record["machine"]["device_kind"]
    assert {"dream_jax_commit", "python", "jax", "jaxlib", "flax", "torch"} <= set(record["versions"])
    results = record["results"]
    assert [(r["impl"], r["mode"], r["size"], r["batch"], r["steps"]) for r in results] == [
        ("jax", "step", 64, 1, 2), ("torch", "step", 64, 1, 2)]
    for r in results:
        for field in POSITIVE:
            assert isinstance(r[field], (int, float)) and math.isfinite(r[field]) and r[field] > 0, \
                (r["impl"], field, r[field])
        assert 0 <= r["rss_growth_bytes"] <= r["peak_rss_bytes"]
        assert len(r["times_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["per_step_s"] == pytest.approx(r["median_s"] / 2)
        assert r["megapixels_per_s"] == pytest.approx(64 * 64 * 2 / r["median_s"] / 1e6)
        assert r["fraction_of_peak"] is None  # CPU: no known peak
    assert results[0]["flops"] == results[1]["flops"]  # torch is credited the jax count
    # A step is the forward to 4c plus the gradient w.r.t. the input: about twice
    # the forward's convolutions (not once per step too many, nor once in all).
    assert 0.7 <= results[0]["flops"] / (2 * 2 * conv_flops(64, 64)) <= 1.5
    (speedup,) = record["speedups"]
    assert speedup["jax_vs_torch"] == pytest.approx(results[1]["median_s"] / results[0]["median_s"])
    table = (tmp_path / "bench" / "results.md").read_text()
    assert "| jax | step | 64 | 1 | 2 |" in table and "| torch | step | 64 | 1 | 2 |" in table
    assert "jax vs torch" in table


def test_unknown_impl_is_a_one_line_error(tmp_path):
    proc = run_main("benchmark", "--impl=jax,tensorflow", f"--out={tmp_path / 'r'}")
    assert_one_line_error(proc, "tensorflow")


@pytest.mark.slow
def test_cache_and_precision_flags_reach_the_record_and_the_disk(weights_dir, tmp_path):
    """--cache keeps jax's compiled and exported steps in the folder (so a second
    run measures a warm process); --precision sets the cases' compute dtype."""
    cache, out = tmp_path / "cache", tmp_path / "r"
    proc = run_script("benchmark", "--sizes=64", "--batch=1", "--steps=1", "--repeats=1",
                      "--impl=jax", "--mode=step", "--precision=bfloat16", f"--cache={cache}",
                      f"--weights={weights_dir}", f"--out={out}", timeout=120)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["settings"]["config"]["precision"] == "bfloat16"
    assert record["settings"]["disk_caches"] == str(cache)
    assert record["machine"]["peak_precision"] == "bf16"
    assert list((cache / "exported").glob("dream_octave-*.jaxexport"))
    assert any((cache / "jax").iterdir())
