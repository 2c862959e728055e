"""Scale: streamed batches, sharding over devices, several
processes with no coordinator, and the Ray engine."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dream_jax.scale import batch, distributed, summary
from dream_jax.engine import devices
from dream_jax.io import input_folders, stream
from dream_jax import render
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError
from tests.conftest import ROOT, assert_one_line_error, run_main

TINY = ["--octaves=1", "--steps=1", "--objective=inception_3a/output"]


def _save(path: Path, size=(32, 32), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _folder_of(folder: Path, names: list[str], **save) -> Path:
    """A new folder of seeded random images, one per name (seed = position)."""
    folder.mkdir()
    for i, name in enumerate(names):
        _save(folder / name, seed=i, **save)
    return folder


def _request(**config) -> render.DreamRequest:
    return render.DreamRequest(input=None, objective="inception_3a/output",
                               config=DreamConfig(octave_n=1, iter_n=1, **config))


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


# --- pieces, no weights ----------------------------------------------------------------

def test_device_choice_and_padding():
    cpu = devices.choose("all")
    assert devices.choose("1") == cpu[:1] and devices.choose(None) == cpu
    for bad, fragment in [("0", "positive count"), ("two", "'all' or a positive count"),
                          (str(len(cpu) + 1), "only")]:
        with pytest.raises(UserError, match=fragment):
            devices.choose(bad)
    assert devices.padded_size(13, 4) == 16 and devices.padded_size(8, 4) == 8
    padded = devices.pad(np.arange(5)[:, None], 8)
    assert padded[:, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_processes_split_the_stream_once_and_flags_are_checked():
    shares = [distributed.Share(i, 3) for i in range(3)]
    assert all(sum(s.owns(i) for s in shares) == 1 for i in range(100))
    for args, fragment in [((None, 0), "of how many"), ((2, None), "needs --process_id"),
                           ((2, 2), "process_id must be in 0..1"), ((0, 0), "num_processes")]:
        with pytest.raises(UserError, match=fragment):
            distributed.share_from(*args, {})
    assert distributed.share_from(None, None, {}) == distributed.Share()
    assert distributed.share_from(1, None, {}) == distributed.Share()
    assert distributed.share_from(4, 3, {}) == distributed.Share(3, 4)


def test_scheduler_variables_give_the_share_and_flags_win():
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4",
             "SLURM_ARRAY_TASK_MIN": "5"}
    assert distributed.share_from(None, None, slurm) == distributed.Share(2, 4)
    stepped = {**slurm, "SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_STEP": "2"}
    assert distributed.share_from(None, None, stepped) == distributed.Share(2, 4)
    assert distributed.share_from(None, None, {"SLURM_ARRAY_TASK_ID": "0",
                                               "SLURM_ARRAY_TASK_COUNT": "1"}) == (
        distributed.Share())
    kubernetes = {"JOB_COMPLETION_INDEX": "3", distributed.NUM_PROCESSES_ENV: "8"}
    assert distributed.share_from(None, None, kubernetes) == distributed.Share(3, 8)
    assert distributed.share_from(16, None, {"JOB_COMPLETION_INDEX": "3"}) == (
        distributed.Share(3, 16))
    assert distributed.share_from(2, 1, slurm) == distributed.Share(1, 2)  # flags win
    for environ, fragment in [({"JOB_COMPLETION_INDEX": "3"}, "of how many"),
                              ({"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT"),
                              ({**slurm, "SLURM_ARRAY_TASK_ID": "9"}, "not in a range 5-8"),
                              ({**slurm, "SLURM_ARRAY_TASK_ID": "x"}, "must be an integer"),
                              ({**stepped, "SLURM_ARRAY_TASK_ID": "8"}, "not in a range")]:
        with pytest.raises(UserError, match=fragment):
            distributed.share_from(None, None, environ)


def _part(process_id: int, done: int, **extra) -> dict:
    return {"done": done, "skipped": 1, "failed": [{"input": f"bad{process_id}", "error": "x"}],
            "interrupted": False, "devices": 1, "processes": 3, "seconds": 2.0 + process_id,
            "images_per_second": 1.0, "dream_seconds": 1.5, "read_seconds": 0.25,
            "write_seconds": 0.125, **extra}


def test_summary_parts_merge_once_all_are_there_and_always_to_the_same_bytes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shares = [distributed.Share(i, 3) for i in range(3)]
    (out / "summary.part-1-of-3.json").write_text(json.dumps({**_part(1, 9), "job": "old",
                                                              "complete": True,
                                                              "process_id": 1}))
    assert summary.finish_part(out, shares[0], "job", _part(0, 4), complete=True) is None
    assert summary.finish_part(out, shares[2], "job", _part(2, 3), complete=True) is None
    assert not (out / "summary.json").exists()  # process 1's part is another job's
    assert summary.finish_part(out, shares[1], "job", _part(1, 2), complete=False) is None
    assert not (out / "summary.json").exists()  # ... and now it stopped early
    with pytest.raises(UserError, match=r"run process\(es\) 1 of 3 again"):
        summary.merge_folder(str(out))
    assert summary.finish_part(out, shares[1], "job", _part(1, 2), complete=True) is None
    merged = json.loads((out / "summary.json").read_text())
    assert (merged["done"], merged["skipped"], merged["processes"], merged["seconds"]) == (
        9, 3, 3, 4.0)
    assert [f["input"] for f in merged["failed"]] == ["bad0", "bad1", "bad2"]
    assert merged["images_per_second"] == round(9 / 4.0, 3) and merged["job"] == "job"
    first = (out / "summary.json").read_bytes()
    # Every process finishing last, or a merge by hand, writes the same bytes.
    assert summary.finish_part(out, shares[0], "job", _part(0, 4), complete=True) is None
    assert (out / "summary.json").read_bytes() == first
    assert summary.merge_folder(str(out)) == merged
    assert (out / "summary.json").read_bytes() == first
    summary.start_part(out, shares[2])  # process 2 runs again: the job is open again
    assert not (out / "summary.json").exists()
    assert not (out / "summary.part-2-of-3.json").exists()
    with pytest.raises(UserError, match="no summary parts"):
        summary.merge_folder(str(tmp_path))


def test_the_job_fingerprint_is_the_names_the_objectives_the_request_and_n(tmp_path):
    a = _folder_of(tmp_path / "a", ["x.png", "y.png"])
    b = _folder_of(tmp_path / "b", ["x.png", "y.png"])
    c = _folder_of(tmp_path / "c", ["x.png", "z.png"])
    texts = ["inception_3a/output"]

    def job(folder, texts=texts, n=2, **config):
        return summary.job_fingerprint(str(folder), texts, _request(**config), n)
    assert job(a) == job(b)  # the same names under another mount point
    assert len({job(a), job(c), job(a, n=3), job(a, texts=[*texts, "class(1)"]),
                job(a, step_size=2.0)}) == 5


def test_list_file_streams_names_and_refuses_taken_ones(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("# photos\na.png\n\nsub/a.png\nsub/a.jpg\nother/a.png\n")
    assert input_folders.count(str(listing)) == 4
    got = list(input_folders.entries(str(listing), ["x"], tmp_path / "out"))
    assert [e.input for e in got] == [tmp_path / "a.png", tmp_path / "sub" / "a.png",
                                      tmp_path / "sub" / "a.jpg", tmp_path / "other" / "a.png"]
    assert [e.outputs[0][1].name if e.outputs else None for e in got] == [
        "a.png", "a.png.png", "a.jpg.png", None]
    assert "already taken" in got[3].error
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="no input images"):
        input_folders.count(str(empty))


def test_grouping_by_shape_keeps_memory_bounded():
    shapes = [(i % 5, 0) for i in range(100)]  # five sizes, interleaved
    read = [0]

    def items():
        for shape in shapes:
            read[0] += 1
            yield shape
    groups, emitted = [], 0
    for group in stream.group_by_shape(items(), lambda s: s, batch_size=4, max_pending=6):
        assert read[0] - emitted <= 7  # waiting items never pass max_pending + 1
        emitted += len(group)
        groups.append(group)
    assert sorted(s for g in groups for s in g) == sorted(shapes)
    assert all(len(set(g)) == 1 and len(g) <= 4 for g in groups)


def test_prefetch_forwards_errors_and_writer_stops_at_the_first():
    def items():
        yield 1
        raise UserError("bad stream")
    with pytest.raises(UserError, match="bad stream"):
        list(stream.Prefetch(items(), size=1))
    written = []

    def write(x):
        if x == 2:
            raise OSError("full")
        written.append(x)
    writer = stream.Writer(write, size=1)
    for x in range(4):
        try:
            writer.submit(x)
        except OSError:
            break
    writer.close()
    assert written == [0, 1] and isinstance(writer.error, OSError)


def test_bad_devices_and_share_flags_are_one_line_before_weights(tmp_path):
    _save(tmp_path / "a.png")
    for flags, fragment in [(["--devices=0"], "positive count"), (["--devices=99"], "only 1"),
                            (["--num_processes=2"], "needs --process_id"),
                            (["--engine=ray", "--num_processes=2", "--process_id=0"],
                             "takes no --num_processes"),
                            (["--engine=ray", "--ray_actors=0"], "ray_actors must be >= 1")]:
        proc = run_main("batch_dream", "--weights=/nonexistent", f"--inputs={tmp_path}",
                        f"--output_dir={tmp_path / 'out'}", *flags)
        assert_one_line_error(proc, fragment)
    proc = run_main("batch_dream", "--weights=/nonexistent", f"--inputs={tmp_path}",
                    f"--output_dir={tmp_path / 'out'}", env={"JOB_COMPLETION_INDEX": "1"})
    assert_one_line_error(proc, "process 1 of how many")


def test_merge_by_hand_and_the_deprecated_flags_say_one_line(tmp_path):
    for i in range(2):
        summary.finish_part(tmp_path, distributed.Share(i, 2), "job", _part(i, 3),
                            complete=True)
    (tmp_path / "summary.json").unlink()  # as if the last process died before merging
    proc = run_main("batch_dream", f"--merge_summaries={tmp_path}",
                    "--coordinator_address=host0:1234", "--peer_timeout=9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ("warning: --coordinator_address, --peer_timeout deprecated "
                                   "and ignored: processes no longer connect to each other")
    assert proc.stdout.startswith("merged 2 parts: done 6, skipped 2, failed 2")
    assert json.loads((tmp_path / "summary.json").read_text())["done"] == 6
    proc = run_main("batch_dream", f"--merge_summaries={tmp_path / 'none'}")
    assert_one_line_error(proc, "no folder")
    assert_one_line_error(run_main("batch_dream", f"--inputs={tmp_path}"), "are required")


# --- streaming, with the real weights ------------------------------------------------------

@pytest.mark.slow
def test_stream_of_hundreds_with_corrupt_files(weights_dir, tmp_path):
    names = [f"img{i:03d}.png" for i in range(240)]
    folder = _folder_of(tmp_path / "in", names)
    bad = {"bad0.png": b"not a png", "bad1.jpg": b"", "bad2.png": b"\x89PNG\r\n\x1a\n"}
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"in/{n}" for n in sorted([*names, *bad])) + "\n")
    out = tmp_path / "out"
    summary = batch.run_batch(str(listing), str(out), _request(), batch_size=16,
                              weights_dir=weights_dir, progress=False, log=lambda *a, **k: None)
    assert summary["done"] == len(names) and summary["skipped"] == 0
    assert summary["devices"] == 1 and summary["processes"] == 1
    assert summary["images_per_second"] > 0
    assert sorted(f["input"] for f in summary["failed"]) == sorted(str(folder / n) for n in bad)
    assert all("\n" not in f["error"] and f["error"] for f in summary["failed"])
    assert sorted(_pngs(out)) == names
    assert json.loads((out / "summary.json").read_text()) == summary
    again = batch.run_batch(str(listing), str(out), _request(), batch_size=16,
                            weights_dir=weights_dir, progress=False, log=lambda *a, **k: None)
    assert again["done"] == 0 and again["skipped"] == len(names) and len(again["failed"]) == 3


# --- sharding over 4 fake CPU devices (a subprocess: the others keep one device) -----------

_SHARDED = """
import sys
import jax, numpy as np
from dream_jax import api, objectives
from dream_jax.engine import deepdream
from dream_jax.engine.config import DreamConfig
from dream_jax.model import weights
params = weights.load_params(sys.argv[1])
assert jax.device_count() == 4
images = np.random.default_rng(0).integers(0, 256, (13, 40, 48, 3), dtype=np.uint8)
per_item = [objectives.parse("inception_3a/output")] * 13
keys = jax.vmap(jax.random.PRNGKey)(np.arange(13))
placements = []
dream = deepdream.deepdream
def spy(params, images, *args, **kwargs):
    out = dream(params, images, *args, **kwargs)
    placements.append((str(getattr(images, "sharding", None)), len(out.sharding.device_set),
                       sorted(s.data.shape[0] for s in out.addressable_shards)))
    return out
deepdream.deepdream = spy
config = DreamConfig(octave_n=2, iter_n=1)
one = api.dream_pixels(params, images, per_item, config, keys, devices=jax.devices()[:1])
four = api.dream_pixels(params, images, per_item, config, keys, devices=jax.devices())
assert four.shape == one.shape == (13, 40, 48, 3)
assert placements[1][0].startswith("NamedSharding") and "'batch': 4" in placements[1][0]
assert placements[1][1:] == (4, [4, 4, 4, 4]), placements
assert placements[0][1] == 1
assert np.array_equal(one, four), np.abs(one.astype(int) - four).max()
from dream_jax import api as dream_api  # the one-call API: one image padded to 4 devices
alone = dream_api.dream(images[0], "inception_3a/output", params=params, octave_n=1, iter_n=1,
                        devices=jax.devices())
assert np.array_equal(alone, dream_api.dream(images[0], "inception_3a/output", params=params,
                                             octave_n=1, iter_n=1))
print("ok")
"""


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("XLA_FLAGS", None) if "XLA_FLAGS" not in extra else None
    return env


@pytest.mark.slow
def test_four_devices_equal_one_and_the_batch_is_sharded(weights_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-c", _SHARDED, str(weights_dir)], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path,
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4",
                                   DREAM_JAX_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# --- several processes, no coordinator ---------------------------------------------------

def _batch(weights_dir, folder, out, *extra) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "batch_dream.py"), f"--weights={weights_dir}",
            f"--inputs={folder}", f"--output_dir={out}", "--batch_size=2", *TINY, *extra]


@pytest.mark.slow
def test_two_processes_dream_each_input_once_as_one_process_does(weights_dir, tmp_path):
    names = [f"p{i}.png" for i in range(7)]
    folder = _folder_of(tmp_path / "in", names, size=(32, 40))
    env = _env(DREAM_JAX_CACHE=str(tmp_path / "cache"))
    single = subprocess.run(_batch(weights_dir, folder, tmp_path / "one"), capture_output=True,
                            text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr
    out = tmp_path / "two"

    def both(env_of):
        procs = [subprocess.Popen(_batch(weights_dir, folder, out), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env={**env, **env_of(i)})
                 for i in range(2)]
        results = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        return results
    # The share from a SLURM array's variables (tasks 3 and 4), as sbatch --array=3-4 gives it.
    results = both(lambda i: {"SLURM_ARRAY_TASK_ID": str(3 + i), "SLURM_ARRAY_TASK_COUNT": "2",
                              "SLURM_ARRAY_TASK_MIN": "3"})
    assert "done 4," in results[0][0] and "done 3," in results[1][0]  # 0,2,4,6 and 1,3,5
    assert _pngs(out) == _pngs(tmp_path / "one")
    merged = (out / "summary.json").read_bytes()
    summary_ = json.loads(merged)
    assert (summary_["done"], summary_["skipped"], summary_["processes"]) == (7, 0, 2)
    (out / "summary.json").unlink()
    by_hand = run_main("batch_dream", f"--merge_summaries={out}")
    assert by_hand.returncode == 0 and (out / "summary.json").read_bytes() == merged
    # Run again (indices from a Kubernetes Indexed Job's variables): nothing is dreamed twice.
    (out / names[3]).unlink()  # as if process 1 had died before writing it
    results = both(lambda i: {"JOB_COMPLETION_INDEX": str(i),
                              distributed.NUM_PROCESSES_ENV: "2"})
    assert "done 0, skipped 4" in results[0][0] and "done 1, skipped 2" in results[1][0]
    assert _pngs(out) == _pngs(tmp_path / "one")
    assert json.loads((out / "summary.json").read_text())["done"] == 1


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One compile cache for the kill tests: only the first run compiles."""
    return tmp_path_factory.mktemp("cache")


SLOW = ["--batch_size=1", "--octaves=2", "--steps=6", "--objective=inception_3b/output"]


@pytest.fixture
def started():
    """Processes a test starts; any still running at its end are killed."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _wait_until(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _done(log: Path) -> tuple[int, int]:
    """(done, skipped) from a batch_dream.py run's last line."""
    line = log.read_text().strip().splitlines()[-1]
    assert line.startswith("done "), log.read_text()[-3000:]
    return int(line.split("done ")[1].split(",")[0]), int(line.split("skipped ")[1].split()[0])


@pytest.fixture(scope="module")
def ten_inputs(weights_dir, tmp_path_factory, shared_cache):
    """Ten 64x64 inputs and what one process makes of them."""
    root = tmp_path_factory.mktemp("ten")
    folder = _folder_of(root / "in", [f"p{i}.png" for i in range(10)], size=(64, 64))
    single = subprocess.run(_batch(weights_dir, folder, root / "one", *SLOW), capture_output=True,
                            text=True, timeout=600, env=_env(DREAM_JAX_CACHE=str(shared_cache)))
    assert single.returncode == 0, single.stderr[-3000:]
    return folder, _pngs(root / "one")


SHARES = ([f"p{i}.png" for i in range(0, 10, 2)], [f"p{i}.png" for i in range(1, 10, 2)])


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_process_rerun_alone_finishes_only_what_is_missing(
        victim, weights_dir, tmp_path, ten_inputs, shared_cache, started):
    # One of two processes is SIGKILLed after its first output: the other
    # finishes its share and exits 0, and no summary.json is merged. The dead
    # one run again alone with the same flags dreams only what it had not
    # written, and, the last to finish, merges summary.json.
    folder, reference = ten_inputs
    out, env = tmp_path / "out", _env(DREAM_JAX_CACHE=str(shared_cache))
    mine, survivor = SHARES[victim], 1 - victim

    def start(process_id: int, log: str) -> subprocess.Popen:
        with open(tmp_path / log, "w") as f:
            started.append(subprocess.Popen(
                _batch(weights_dir, folder, out, *SLOW, "--num_processes=2",
                       f"--process_id={process_id}"), stdout=f, stderr=subprocess.STDOUT, env=env))
        return started[-1]
    procs = [start(i, f"log{i}") for i in range(2)]
    _wait_until(lambda: any((out / n).exists() for n in mine), f"process {victim}'s first output")
    procs[victim].kill()
    procs[victim].wait()
    kept = _pngs(out)
    kept_mine = sum(n in kept for n in mine)
    assert 1 <= kept_mine < len(mine), "the kill should land mid-share"
    assert procs[survivor].wait(timeout=300) == 0, (tmp_path / f"log{survivor}").read_text()
    assert _done(tmp_path / f"log{survivor}") == (5, 0)  # its whole share, never stopped
    assert not (out / "summary.json").exists()
    assert start(victim, "rerun").wait(timeout=300) == 0, (tmp_path / "rerun").read_text()
    assert _done(tmp_path / "rerun") == (len(mine) - kept_mine, kept_mine)
    final = _pngs(out)
    assert final == reference
    assert all(final[n] == data for n, data in kept.items())
    summary_ = json.loads((out / "summary.json").read_text())
    assert (summary_["done"], summary_["skipped"], summary_["processes"]) == (
        10 - kept_mine, kept_mine, 2)
    assert sorted(p.name for p in out.glob("summary*")) == [
        "summary.json", "summary.part-0-of-2.json", "summary.part-1-of-2.json"]
    assert not list(out.glob(".*"))


# --- the Ray engine, on a local 2-CPU cluster ---------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 ** 2)
    yield ray
    ray.shutdown()


# Two actors of half a CPU each leave Ray Data a CPU for its own work on 2 CPUs.
RAY_POOL = dict(actors=2, cpus_per_actor=0.5)


def _ray_job(folder, out, request, weights_dir, batch_size) -> tuple[threading.Thread, dict]:
    """`run_batch(engine="ray")` on a thread (a hung pool fails the test, not CI):
    the thread and where its summary or exception lands."""
    from dream_jax.scale import ray_engine
    result: dict = {}

    def job():
        try:
            result["summary"] = batch.run_batch(
                str(folder), str(out), request, batch_size=batch_size, weights_dir=weights_dir,
                progress=False, log=lambda *a, **k: None, engine="ray",
                ray_options=ray_engine.RayOptions(**RAY_POOL))
        except BaseException as e:  # noqa: BLE001 -- reported by the test
            result["error"] = e
    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    return thread, result


def _finished(thread: threading.Thread, result: dict) -> dict:
    thread.join(timeout=600)
    assert not thread.is_alive(), "the Ray job did not finish within 600 s"
    assert "error" not in result, result
    return result["summary"]


@pytest.mark.slow
def test_ray_dreams_the_bytes_and_summary_of_the_local_engine(weights_dir, tmp_path,
                                                              ray_cluster):
    names = [f"p{i}.png" for i in range(5)]
    folder = _folder_of(tmp_path / "in", names, size=(32, 40))
    _save(folder / "big.png", size=(48, 40))  # a second size: its own compiled call
    (folder / "bad.png").write_bytes(b"not a png")
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "p0.png").write_bytes(b"")  # not made by this request: an error
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "p0.png").write_bytes(b"")
    local = batch.run_batch(str(folder), str(tmp_path / "local"), _request(), batch_size=2,
                            weights_dir=weights_dir, progress=False, log=lambda *a, **k: None)
    on_ray = _finished(*_ray_job(folder, tmp_path / "ray", _request(), weights_dir, 2))
    from dream_jax.scale import ray_engine
    with pytest.raises(UserError, match="need 3 CPUs; the cluster has 2"):  # would wait forever
        batch.run_batch(str(folder), str(tmp_path / "refused"), _request(), engine="ray",
                        ray_options=ray_engine.RayOptions(actors=3), progress=False)
    assert _pngs(tmp_path / "ray") == _pngs(tmp_path / "local")
    assert len(_pngs(tmp_path / "ray")) == 6
    for key in ("done", "skipped", "failed", "interrupted"):
        assert on_ray[key] == local[key], key
    assert (on_ray["done"], on_ray["skipped"], len(on_ray["failed"])) == (5, 0, 2)
    assert (on_ray["engine"], on_ray["actors"], on_ray["devices"]) == ("ray", 2, 2)
    assert json.loads((tmp_path / "ray" / "summary.json").read_text()) == on_ray


def _actor_pids() -> list[int]:
    """Processes of Ray Data's actor pool (their title names the map worker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"MapWorker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_ray_actor_killed_mid_job_the_job_still_finishes_whole(weights_dir, tmp_path,
                                                               ten_inputs, ray_cluster):
    folder, reference = ten_inputs
    out = tmp_path / "out"
    request = render.DreamRequest(input=None, objective="inception_3b/output",
                                  config=DreamConfig(octave_n=2, iter_n=6))
    before = set(_actor_pids())  # the last test's actors, if still on their way out

    def pool() -> list[int]:
        return sorted(set(_actor_pids()) - before)
    thread, result = _ray_job(folder, out, request, weights_dir, batch_size=1)
    _wait_until(lambda: len(_pngs(out)) >= 1 and len(pool()) == 2, "a first output")
    victim = pool()[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = len(_pngs(out))
    summary_ = _finished(thread, result)
    assert killed_at < 10, "the kill should land mid-job"
    assert summary_["done"] + summary_["skipped"] == 10 and not summary_["failed"]
    assert _pngs(out) == reference  # every output whole, and the local engine's bytes
    assert victim not in _actor_pids()  # it was killed, and the job went on without it
    assert not list(out.glob(".*"))
