"""Every compiled program lowers for CUDA and TPU on a machine with neither
(jax.export), and a program a platform refuses is reported, not passed over."""
import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from benchmarks import lowering
from tests.conftest import assert_one_line_error, run_main


def test_lower_only_lowers_every_program_for_cuda_and_tpu():
    proc = run_main("gpu_check", "--lower_only", "--platforms=cuda,tpu")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for program in lowering.programs():
        for platform in ("cuda", "tpu"):
            [line] = [x for x in lines if x.split()[1:3] == [platform, program.name + ":"]]
            assert line.startswith("ok") and "StableHLO" in line and "KiB" in line
    assert lines[-1] == "lowering: every program lowered for cuda, tpu"
    names = {p.name for p in lowering.programs()}
    assert {"dream_level[whole,custom]", "dream_level[tiles,native]",
            "visualize.optimize[native]", "classify.probabilities"} <= names


def test_a_program_a_platform_refuses_is_a_failure():
    def host_callback(x):  # a host callback has no serialisable lowering on any platform
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    refused = lowering.Program("host_callback", lambda platforms: export.export(
        jax.jit(host_callback), platforms=platforms)(jax.ShapeDtypeStruct((3,), jnp.float32)))
    lines = []
    failures = lowering.lower_all(("cuda",), lines.append, [refused])
    assert len(failures) == 1 and failures[0].startswith("host_callback on cuda: ")
    assert lines[0].startswith("FAILED cuda  host_callback:")


def test_an_unknown_platform_is_a_one_line_error():
    assert_one_line_error(run_main("gpu_check", "--lower_only", "--platforms=cuda,gpu"),
                          "--platforms must name some of")
