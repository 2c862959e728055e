"""Scale (issues 12, 20): streamed batches, sharding over devices, several
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

from dream_jax import batch, devices, distributed, inputs, render, stream, summary
from dream_jax.config import DreamConfig
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
    assert inputs.count(str(listing)) == 4
    got = list(inputs.entries(str(listing), ["x"], tmp_path / "out"))
    assert [e.input for e in got] == [tmp_path / "a.png", tmp_path / "sub" / "a.png",
                                      tmp_path / "sub" / "a.jpg", tmp_path / "other" / "a.png"]
    assert [e.outputs[0][1].name if e.outputs else None for e in got] == [
        "a.png", "a.png.png", "a.jpg.png", None]
    assert "already taken" in got[3].error
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="no input images"):
        inputs.count(str(empty))


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
    proc = run_main("batch_dream", f"--merge_summaries={tmp_path}", "--inputs=x",
                    "--output_dir=y", "--coordinator_address=host0:1234", "--peer_timeout=9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ("warning: --coordinator_address, --peer_timeout deprecated "
                                   "and ignored: processes no longer connect to each other")
    assert proc.stdout.startswith("merged 2 parts: done 6, skipped 2, failed 2")
    assert json.loads((tmp_path / "summary.json").read_text())["done"] == 6
    proc = run_main("batch_dream", f"--merge_summaries={tmp_path / 'none'}", "--inputs=x",
                    "--output_dir=y")
    assert_one_line_error(proc, "no folder")


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
from dream_jax import api, deepdream, objectives, weights
from dream_jax.config import DreamConfig
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


# --- two processes joined by jax.distributed ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "two"
    procs = [subprocess.Popen(_batch(weights_dir, folder, out, f"--coordinator_address={address}",
                                     "--num_processes=2", f"--process_id={i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr[-3000:]
    assert "done 4," in results[0][0] and "done 3," in results[1][0]  # 0,2,4,6 and 1,3,5
    assert _pngs(out) == _pngs(tmp_path / "one")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["processes"]) == (7, 0, 2)
    # Restarted with the same flags: nothing is dreamed again.
    (out / names[3]).unlink()  # as if process 1 had died before writing it
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen(_batch(weights_dir, folder, out, f"--coordinator_address={address}",
                                     "--num_processes=2", f"--process_id={i}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results[1][1][-3000:]
    assert "done 0, skipped 4" in results[0][0] and "done 1, skipped 2" in results[1][0]
    assert _pngs(out) == _pngs(tmp_path / "one")


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


def _start(started, weights_dir, folder, out, address, process_id, log: Path, env, *extra):
    with open(log, "w") as f:
        started.append(subprocess.Popen(_batch(weights_dir, folder, out, *SLOW,
                                               f"--coordinator_address={address}",
                                               "--num_processes=2", f"--process_id={process_id}",
                                               *extra),
                                        stdout=f, stderr=subprocess.STDOUT, env=env))
    return started[-1]


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


class _Job:
    """Two processes over `ten_inputs`: one output folder, one address, logs
    log0, log1, ... in the test's folder."""

    def __init__(self, started, weights_dir, tmp_path, ten_inputs, shared_cache):
        self.folder, self.reference = ten_inputs
        self.out, self.tmp = tmp_path / "out", tmp_path
        self.env = _env(DREAM_JAX_CACHE=str(shared_cache))
        self.address = f"127.0.0.1:{_free_port()}"
        self.started, self.weights_dir = started, weights_dir

    def log(self, n: int) -> Path:
        return self.tmp / f"log{n}"

    def start(self, process_id: int, log: int, *extra) -> subprocess.Popen:
        return _start(self.started, self.weights_dir, self.folder, self.out, self.address,
                      process_id, self.log(log), self.env, *extra)

    def kill(self, proc: subprocess.Popen) -> dict:
        """SIGKILL, then the outputs written so far."""
        proc.kill()
        proc.wait()
        return _pngs(self.out)


SHARES = ([f"p{i}.png" for i in range(0, 10, 2)], [f"p{i}.png" for i in range(1, 10, 2)])


@pytest.fixture
def job(weights_dir, tmp_path, ten_inputs, shared_cache, started):
    return _Job(started, weights_dir, tmp_path, ten_inputs, shared_cache)


@pytest.mark.slow
def test_a_killed_process_restarted_with_the_same_flags_rejoins_and_finishes_its_share(job):
    # Process 1 is SIGKILLed after its first output: process 0 finishes its own
    # share, says it waits, and waits; process 1 started again with the same
    # flags rejoins the job, dreams only what its first run did not write, and
    # process 0 merges the summaries.
    out, ones = job.out, SHARES[1]
    procs = [job.start(i, i) for i in range(2)]
    _wait_until(lambda: any((out / n).exists() for n in ones), "process 1's first output")
    kept = job.kill(procs[1])
    assert 1 <= sum(n in kept for n in ones) < len(ones), "the kill should land mid-share"
    _wait_until(lambda: "waiting for process(es) 1, not running" in job.log(0).read_text(),
                "process 0 to wait for process 1")
    assert procs[0].poll() is None  # the survivor waits for the restart
    restarted = job.start(1, 2)
    assert restarted.wait(timeout=300) == 0, job.log(2).read_text()[-3000:]
    assert procs[0].wait(timeout=120) == 0, job.log(0).read_text()[-3000:]
    assert _done(job.log(0)) == (5, 0)  # p0, p2, ..., p8: never stopped
    kept_ones = sum(n in kept for n in ones)
    assert _done(job.log(2)) == (len(ones) - kept_ones, kept_ones)  # each input dreamed once
    final = _pngs(out)
    assert final == job.reference
    assert all(final[n] == data for n, data in kept.items())
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["processes"]) == (
        10 - kept_ones, kept_ones, 2)
    assert not list(out.glob(".*"))


@pytest.mark.slow
def test_process_0_killed_the_others_finish_alone_and_its_restart_finishes(job):
    # Process 0 hosts jax's coordination service: when it dies, jax ends the
    # other processes' sidecars, not them: they finish their shares alone.
    # Process 0 started again with the same flags finds no job (its peers are
    # done) and finishes the rest of its share alone.
    out, (zeros, ones) = job.out, SHARES
    procs = [job.start(i, i) for i in range(2)]
    _wait_until(lambda: any((out / n).exists() for n in zeros)
                and any((out / n).exists() for n in ones), "a first output of each process")
    kept = job.kill(procs[0])
    kept_zeros = sum(n in kept for n in zeros)
    assert kept_zeros >= 1
    assert procs[1].wait(timeout=300) == 0, job.log(1).read_text()[-3000:]
    assert _done(job.log(1)) == (5, 0)  # its whole share, never stopped
    if sum(n in kept for n in ones) < len(ones):  # still dreaming when process 0 died
        assert "process 1 ran alone" in job.log(1).read_text()
    assert not (out / "summary.json").exists()
    restarted = job.start(0, 2, "--join_timeout=2")
    assert restarted.wait(timeout=300) == 0, job.log(2).read_text()[-3000:]
    assert "process 0 dreams its share alone" in job.log(2).read_text()
    assert _done(job.log(2)) == (len(zeros) - kept_zeros, kept_zeros)
    final = _pngs(out)
    assert final == job.reference
    assert all(final[n] == data for n, data in kept.items())
    assert not list(out.glob(".*"))


@pytest.mark.slow
def test_a_dead_process_not_restarted_in_time_fails_process_0_and_later_runs_alone(job):
    # Process 0 waits --peer_timeout for a dead process, then exits 1 with one
    # error line; the dead process run later finds no job and finishes alone.
    out, ones = job.out, SHARES[1]
    procs = [job.start(0, 0, "--peer_timeout=1"), job.start(1, 1)]
    _wait_until(lambda: any((out / n).exists() for n in ones), "process 1's first output")
    kept = job.kill(procs[1])
    assert procs[0].wait(timeout=300) == 1
    errors = [line for line in job.log(0).read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not restarted within 1s" in errors[0], job.log(0).read_text()
    assert not (out / "summary.json").exists()
    kept_ones = sum(n in kept for n in ones)
    again = job.start(1, 2, "--join_timeout=1")
    assert again.wait(timeout=300) == 0, job.log(2).read_text()[-3000:]
    assert "process 1 dreams its share alone" in job.log(2).read_text()
    assert _done(job.log(2)) == (len(ones) - kept_ones, kept_ones)
    assert _pngs(out) == job.reference
