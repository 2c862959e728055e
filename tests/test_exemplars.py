"""Natural exemplars: the top-k merge is exact (batches, restarts, kills), bad
files are listed and skipped, names are relative, patches are receptive fields."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dream_jax.workbench import exemplars, topk
from dream_jax.model import DEFAULT as NET, googlenet, receptive
from tests.conftest import ROOT, assert_one_line_error, run_main

LAYERS = ("inception_3a/output", "inception_3b/output")
SIZE = 64


def _brute_force_top(keys, k):
    """Per channel, the k best (key desc, index asc) of a full (N, C) table."""
    order = np.lexsort((np.broadcast_to(np.arange(len(keys))[:, None], keys.shape).T, -keys.T),
                       axis=-1)
    return order[:, :k]


def test_topk_merge_equals_one_sort_whatever_the_chunks():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 6, (40, 5)).astype(np.float32)  # many ties
    for chunks in ([40], [1] * 40, [7, 13, 1, 19], [3] * 13 + [1]):
        top, start = topk.empty(5, 4), 0
        for n in chunks:
            idx = np.arange(start, start + n)
            pad = np.concatenate([idx, [-1, -1]])  # padding never enters
            block = np.concatenate([keys[idx], np.full((2, 5), 99, np.float32)])
            top = topk.merge(top, topk.candidates(block, block, block, np.zeros_like(block,
                                                  np.int64), pad))
            start += n
        np.testing.assert_array_equal(top["index"], _brute_force_top(keys, 4))


def _photos(folder, count=11):
    """skimage photos cut into pieces of different sizes, a noise image, a
    corrupt file and a subfolder: the kinds of thing a real folder holds."""
    from skimage import data
    folder.mkdir()
    (folder / "sub").mkdir()
    sources = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    for i in range(count):
        src = sources[i % len(sources)]
        y, x = (17 * i) % 80, (29 * i) % 120
        piece = src[y:y + 90 + 5 * i, x:x + 70 + 7 * i]
        where = folder / "sub" if i % 4 == 3 else folder
        Image.fromarray(piece).save(where / f"p{i:02d}.png")
    noise = np.random.default_rng(1).integers(0, 255, (70, 70, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return _photos(tmp_path_factory.mktemp("ex") / "photos")


def _list_file(photos, tmp_path):
    names = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*")
                   if p.is_file())
    path = photos / "inputs.txt"
    path.write_text("\n".join(names) + "\n")
    return path


def _mine(params, spec, out, batch, **kw):
    out.mkdir(exist_ok=True)
    return exemplars.mine(params, str(spec), out, exemplars.Settings(LAYERS, 3, SIZE),
                          batch_size=batch, **kw)


def _tables(record):
    return {(layer, c): [(e["input"], e["y"], e["x"]) for e in entries]
            for layer, entry in record["layers"].items()
            for c, entries in entry["channels"].items()}


def test_mining_is_a_brute_force_top_k_whatever_the_batch(params, photos, tmp_path):
    spec = _list_file(photos, tmp_path)
    runs = [_mine(params, spec, tmp_path / f"b{b}", b) for b in (4, 5)]
    assert _tables(runs[0]) == _tables(runs[1])
    record = runs[0]
    assert record["images"] == 12 and [f["input"] for f in record["failed"]] == ["broken.jpg"]
    assert "not an image" in record["failed"][0]["error"] or "corrupt" in \
        record["failed"][0]["error"]
    text = (tmp_path / "b4" / exemplars.RESULT_FILE).read_text()
    assert str(tmp_path) not in text and "sub/p03.png" in text  # relative to the input root
    # brute force: every image in one call, one sort per channel
    names = [line for line in spec.read_text().split() if line != "broken.jpg"]
    images = np.stack([exemplars.load_square(photos / n, SIZE) for n in names])
    stats = exemplars.channel_stats(params, jnp.asarray(NET.to_model(
        images)), layers=LAYERS)
    order = [n for n in spec.read_text().split()]  # stream positions include the bad file
    for layer in LAYERS:
        maximum, mean, _ = (np.asarray(v) for v in stats[layer])
        for ranking, key in (("channels", maximum), ("channels_by_mean", mean)):
            best = _brute_force_top(key, 3)
            for c in range(0, key.shape[1], 7):
                got = record["layers"][layer][ranking][str(c)]
                assert [e["input"] for e in got] == [names[i] for i in best[c]]
                np.testing.assert_allclose([e["score"] for e in got], maximum[best[c], c],
                                           rtol=1e-5)
                assert all(order.index(e["input"]) == e["index"] for e in got)
    # every exemplar has its patch, cut from its receptive field around the maximum
    entry = record["layers"][LAYERS[0]]["channels"]["5"][0]
    patch = np.asarray(Image.open(tmp_path / "b4" / entry["patch"]))
    y0, x0, y1, x1 = entry["box"]
    assert patch.shape[:2] == (y1 - y0, x1 - x0) and y0 <= entry["y"] * 8 < y1


def test_an_interrupted_run_resumes_to_the_same_result(params, photos, tmp_path):
    whole = _mine(params, photos, tmp_path / "whole", 3)
    calls = []

    def stop_after_two(done):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _mine(params, photos, tmp_path / "cut", 3, on_batch=stop_after_two)
    assert not (tmp_path / "cut" / exemplars.RESULT_FILE).exists()
    resumed = _mine(params, photos, tmp_path / "cut", 3, on_batch=calls.append)
    assert calls[2:] == [9, 10]  # only what was left was read again
    assert _tables(resumed) == _tables(whole) and resumed["failed"] == whole["failed"]


def test_a_rerun_of_a_finished_mine_keeps_its_result_and_patches(params, photos, tmp_path):
    first = _mine(params, photos, tmp_path, 4)
    files = [tmp_path / exemplars.RESULT_FILE, *sorted((tmp_path / exemplars.PATCH_DIR).rglob(
        "*.png"))]
    stamp = lambda: [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    before, logged = stamp(), []
    again = _mine(params, photos, tmp_path, 4, log=logged.append)
    assert stamp() == before and any("up to date" in line for line in logged)
    assert {k: v for k, v in again.items() if "seconds" not in k} == \
        {k: v for k, v in first.items() if "seconds" not in k}
    gone = files[3]
    content = gone.read_bytes()
    gone.unlink()  # a missing patch: the result is written again, with it
    logged.clear()
    _mine(params, photos, tmp_path, 4, log=logged.append)
    assert gone.read_bytes() == content and not any("up to date" in line for line in logged)


@pytest.mark.slow
def test_a_killed_script_resumes_to_the_same_result(weights_dir, photos, tmp_path):
    args = [f"--inputs={photos}", "--top_k=3", f"--size={SIZE}", "--batch_size=1",
            f"--weights={weights_dir}", "--nopatches"] + [f"--layer={l}" for l in LAYERS]
    (tmp_path / "whole").mkdir(), (tmp_path / "killed").mkdir()
    assert run_main("exemplars", *args, f"--output_dir={tmp_path / 'whole'}").returncode == 0
    state = tmp_path / "killed" / exemplars.STATE_FILE
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "exemplars.py"), *args,
                             f"--output_dir={tmp_path / 'killed'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / exemplars.RESULT_FILE).exists(), "finished before the kill"
    assert run_main("exemplars", *args, f"--output_dir={tmp_path / 'killed'}").returncode == 0
    read = lambda d: json.loads((tmp_path / d / exemplars.RESULT_FILE).read_text())
    assert _tables(read("killed")) == _tables(read("whole"))


def test_receptive_field_holds_every_position_gradient(params):
    layer, side = "inception_3a/output", 80
    field = receptive.measure(params, layer, side)
    bound, step = googlenet.receptive_field(layer)
    assert field.stride == step and field.bottom - field.top <= bound
    image = jnp.asarray(np.random.default_rng(3).normal(0, 60, (1, side, side, 3)), jnp.float32)
    for y, x in ((0, 0), (2, 7), (9, 9), (5, 1)):
        grad = jax.grad(lambda im: googlenet.apply(params, im, (layer,))[layer][0, y, x].sum()
                        )(image)
        rows, cols = np.nonzero(np.abs(np.asarray(grad[0])).sum(-1))
        y0, x0, y1, x1 = field.box(y, x)
        assert rows.size and y0 <= rows.min() and rows.max() < y1, (y, x)
        assert x0 <= cols.min() and cols.max() < x1, (y, x)


@pytest.mark.parametrize("args, fragment", [
    (["--layer=inception_3a/outptu"], "did you mean"),
    (["--layer=prob"], "no spatial channels"),
    (["--layer=inception_5b/output", "--size=24"], "too small for inception_5b/output"),
    (["--layer=inception_3a/output", "--inputs={tmp}/none/*.jpg"], "no input images"),
    (["--layer=inception_3a/output", "--top_k=0"], "top_k must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path, weights_dir, args, fragment):
    args = [a.format(tmp=tmp_path) for a in args]
    if not any(a.startswith("--inputs") for a in args):
        args.append(f"--inputs={tmp_path}")
    proc = run_main("exemplars", *args, f"--output_dir={tmp_path}", f"--weights={weights_dir}")
    assert_one_line_error(proc, fragment)


@pytest.mark.slow
def test_two_devices_mine_what_one_does(weights_dir, photos, tmp_path):
    from tests.conftest import run_script
    args = [f"--inputs={photos}", "--top_k=3", f"--size={SIZE}", "--batch_size=3",
            f"--weights={weights_dir}", "--nopatches"] + [f"--layer={l}" for l in LAYERS]
    results = []
    for devices, flags in (("1", ""), ("2", "--xla_force_host_platform_device_count=2")):
        out = tmp_path / f"d{devices}"
        out.mkdir()
        proc = run_script("exemplars", *args, f"--devices={devices}", f"--output_dir={out}",
                          env={"XLA_FLAGS": flags})
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads((out / exemplars.RESULT_FILE).read_text()))
    assert _tables(results[0]) == _tables(results[1])
    for layer in LAYERS:
        for c in ("0", "100"):
            np.testing.assert_allclose(
                [e["score"] for e in results[0]["layers"][layer]["channels"][c]],
                [e["score"] for e in results[1]["layers"][layer]["channels"][c]], rtol=1e-5)
