"""The prepared GPU check, on the CPU: its dry run end to end, the plan it
would run on a GPU, and how it records what fails, times out or does not fit."""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TORCH_ABSENT, assert_one_line_error, run_script

pytest.importorskip("torch", reason=TORCH_ABSENT)

from benchmarks import gpu_check  # noqa: E402


RECORD_KEYS = {"machine", "versions", "date", "check", "correctness", "cases", "results",
               "speedups", "kernels", "warm_first_calls", "targets"}


def test_dry_run_end_to_end(weights_dir, tmp_path):
    out = tmp_path / "check"
    record = gpu_check.run_check(out, weights_dir, dry_run=True, budget_s=600)
    saved = json.loads((out / "gpu_check.json").read_text())
    assert RECORD_KEYS <= set(saved) and saved["check"]["dry_run"] is True
    assert saved["versions"]["jax"] and saved["versions"]["torch"] and saved["machine"]["cpu_count"]
    correctness = saved["correctness"]
    assert correctness["passed"], correctness
    assert set(correctness["checks"]) == {"dream_step", "octave_loop", "classification"}
    for name in ("dream_step", "octave_loop"):  # CPU vs CPU: identical pixels
        check = correctness["checks"][name]
        assert check["measured"] == {"within_2_levels": 1.0, "mean_abs_diff": 0.0, "max_abs_diff": 0}
        assert check["tolerance"] == gpu_check.PIXEL_TOLERANCE[name]
    classification = correctness["checks"]["classification"]["measured"]
    assert classification["top5_accelerator"] == classification["top5_cpu"]
    assert classification["max_prob_diff"] == 0
    assert [c["name"] for c in saved["cases"]] == list(gpu_check.DRY_RUN_ORDER)
    assert all(c["status"] == "ok" for c in saved["cases"]), saved["cases"]
    kernels = {c["name"]: c["env"]["DREAM_JAX_KERNELS"] for c in saved["cases"]}
    assert kernels == {"batch-f32": None, "batch-f32-custom": "custom",
                       "batch-f32-native": "native", "batch-f32-warm": None}
    assert [(r["case"], r["impl"]) for r in saved["results"]] == [
        ("batch-f32", "jax"), ("batch-f32", "torch"), ("batch-f32-custom", "jax"),
        ("batch-f32-native", "jax"), ("batch-f32-warm", "jax")]
    assert all(r["size"] == 64 and r["batch"] == 2 and r["precision"] == "float32"
               for r in saved["results"])
    (speedup,) = saved["speedups"]
    assert speedup["jax_vs_torch"] > 0 and "jax_vs_torch_compile" not in speedup
    (kernel,) = saved["kernels"]
    assert kernel["custom_vs_native"] > 0
    (warm,) = saved["warm_first_calls"]
    assert warm["warm_first_call_s"] > 0 and warm["cold_first_call_s"] > 0
    for case in gpu_check.DRY_RUN_ORDER:
        assert {f"{case}.json", f"{case}.md", f"{case}.log"} <= {
            p.name for p in (out / "benchmarks").iterdir()}
    table = (out / "gpu_check.md").read_text()
    for heading in ("## Correctness", "## Benchmarks", "## jax speedups",
                    "## Custom vs native gradients", "## First call with warm caches"):
        assert heading in table
    assert "| batch-f32-native | jax | step | 64 | 2 | float32 | native |" in table
    assert record["results"] == saved["results"]


def test_gpu_plan_covers_the_issue_cases():
    cases = gpu_check.plan()
    assert [c.name for c in cases] == list(gpu_check.ORDER)
    measured = {(*c.mode_size_batch, c.precision, impl)
                for c in cases if c.variant in ("", "compile") for impl in c.spec.impls}
    assert measured == {(mode, size, batch, precision, impl)
                        for mode, size, batch in [("step", 224, 64), ("step", 1024, 8),
                                                  ("octave", 1024, 1)]
                        for precision in ("float32", "bfloat16")
                        for impl in ("jax", "torch", "torch_compile")}
    assert cases[0].name == "batch-bf16" and cases[0].spec.impls == ("jax", "torch")
    custom, native = gpu_check.BenchCase.parse("batch-bf16-custom"), gpu_check.BenchCase.parse(
        "batch-bf16-native")
    assert gpu_check.benchmark_env(custom)["DREAM_JAX_KERNELS"] == "custom"
    assert gpu_check.benchmark_env(native)["DREAM_JAX_KERNELS"] == "native"
    assert custom.spec.cache != native.spec.cache != "shared"  # exported steps ignore the variable
    command = gpu_check.benchmark_command(gpu_check.BenchCase.parse("large-f32-compile"),
                                          Path("o"), Path("c"), None)
    assert command[1:] == [str(gpu_check.BENCHMARK_SCRIPT), "--impl=torch_compile", "--mode=step",
                           "--sizes=1024", "--batch=8", "--steps=10", "--repeats=5",
                           "--precision=float32", "--out=o/large-f32-compile", "--cache=c"]
    record = {"machine": {"device_kind": "NVIDIA H100 80GB HBM3"}, "date": "2026-11-27T01:02:03+00:00"}
    assert gpu_check.results_path(record) == "benchmarks/results/2026-11-27-nvidia-h100-80gb-hbm3.json"


def test_cases_that_need_torch_are_skipped_where_it_is_absent(monkeypatch):
    real = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    reasons = {c.name: gpu_check._skip_reason(c, 600, {}) for c in gpu_check.plan(True, None)}
    assert reasons["batch-f32"] == "PyTorch is not installed here (the reference for this case)"
    assert reasons["batch-f32-custom"] is None  # jax only


def test_budget_and_missing_base_skip_cases(weights_dir, tmp_path):
    record = gpu_check.run_check(tmp_path / "a", weights_dir, dry_run=True, budget_s=0,
                                 check_correctness=False)
    assert [(c["status"], c["reason"]) for c in record["cases"]] == [
        ("skipped", "budget: 0s left")] * len(gpu_check.DRY_RUN_ORDER)
    assert record["correctness"] is None and record["results"] == []
    assert "## Cases not measured" in (tmp_path / "a" / "gpu_check.md").read_text()
    record = gpu_check.run_check(tmp_path / "b", weights_dir, dry_run=True, budget_s=600,
                                 names=["batch-f32-warm"], check_correctness=False)
    (case,) = record["cases"]
    assert case["status"] == "skipped" and "needs batch-f32" in case["reason"]


FAKE_BENCHMARKS = {
    "failed": "import sys; print('progress'); print('error: out of memory', file=sys.stderr); "
              "sys.exit(3)",
    "no record": "print('done')",
    "timeout": "import subprocess, sys, time\n"
               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
               "out = [a for a in sys.argv if a.startswith('--out=')][0][len('--out='):]\n"
               "open(out + '.pid', 'w').write(str(child.pid))\n"
               "time.sleep(60)",
}


@pytest.mark.parametrize("kind", FAKE_BENCHMARKS)
def test_a_failing_case_is_recorded_and_its_processes_end(kind, tmp_path, monkeypatch):
    script = tmp_path / "benchmark.py"
    script.write_text(textwrap.dedent(FAKE_BENCHMARKS[kind]))
    monkeypatch.setattr(gpu_check, "BENCHMARK_SCRIPT", script)
    case = gpu_check.BenchCase.parse("batch-f32", dry_run=True)
    start = time.monotonic()
    entry = gpu_check.run_case(case, tmp_path, tmp_path / "cache", None, timeout_s=3)
    assert time.monotonic() - start < 30
    expected = {"failed": ("failed", "error: out of memory"),
                "no record": ("failed", "no record written (batch-f32.json)"),
                "timeout": ("timeout", "timed out after 3s")}[kind]
    assert (entry["status"], entry["reason"]) == expected
    assert "record" not in entry and "batch-f32.log" in entry["files"]
    if kind == "timeout":  # the whole process group ended, the benchmark's children too
        pid = int((tmp_path / "batch-f32.pid").read_text())
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"child {pid} of the timed-out benchmark is still running")


def test_make_gpu_check_is_one_command_on_plain_python(weights_dir, tmp_path):
    """`make gpu-check` installs nothing (the GPU machine's python3 has the packages):
    its recipe is the script alone. Run here with nothing to benchmark, it exercises
    the command line, the weights and the record."""
    env = {k: v for k, v in os.environ.items()  # no outer make's or user's overrides
           if k not in {"PYTHON", "GPU_CHECK_OUT", "GPU_CHECK_ARGS", "MAKEFLAGS", "MFLAGS",
                        "MAKELEVEL", "MAKEOVERRIDES"}}
    dry = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert [line.rstrip() for line in dry.stdout.splitlines()] == [
        "PYTHONPATH=. python3 scripts/gpu_check.py --out=bench/gpu_check"]
    out = tmp_path / "out"
    proc = subprocess.run(
        ["make", "-s", "gpu-check", f"PYTHON={sys.executable}", f"GPU_CHECK_OUT={out}",
         f"GPU_CHECK_ARGS=--dry_run --nocorrectness --cases=batch-f32-warm --weights={weights_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "gpu check: correctness not run; cases: 1 skipped" in proc.stdout
    assert RECORD_KEYS <= set(json.loads((out / "gpu_check.json").read_text()))


@pytest.mark.parametrize("args, fragment", [
    (["--weights=/nonexistent/weights"], "/nonexistent/weights"),
    (["--cases=batch-f32,nope"], "unknown case(s) nope"),
])
def test_bad_input_is_a_one_line_error(args, fragment, tmp_path):
    proc = run_script("gpu_check", "--dry_run", f"--out={tmp_path / 'out'}", *args, timeout=60)
    assert_one_line_error(proc, fragment)


def test_unwritable_out_is_a_one_line_error(weights_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_script("gpu_check", "--dry_run", f"--out={blocker / 'out'}",
                      f"--weights={weights_dir}", timeout=60)
    assert_one_line_error(proc, "cannot write to --out", str(blocker / "out"))
