"""conftest.run_main: a script run in this interpreter looks like a fresh one's.

Most one-line-error cases run in-process (milliseconds instead of seconds); these
tests keep that honest: the same exit status, stdout and stderr as a real
interpreter, fresh flags for every run, crashes still visible as tracebacks, and
no state (flags, logging, jax options, sys, environment) left behind.
"""
import logging
import os
import sys
import warnings

import pytest
from absl import flags
from absl import logging as absl_logging

from tests.conftest import assert_one_line_error, run_main, run_script

NO_WEIGHTS = "--weights=/nonexistent"


def _both(name, *args, cwd=None):
    return run_main(name, *args, cwd=cwd), run_script(name, *args, cwd=cwd)


@pytest.mark.parametrize("args,status,fragment", [
    (["--steps=many"], 2, "--steps"),  # absl cannot parse it
    (["positional"], 2, "positional"),
    (["--input=missing.png"], 1, "missing.png: no such file"),
    (["--objective=inception_4c/ouput"], 1, "did you mean 'inception_4c/output'?"),
], ids=["unparsable", "positional", "missing_input", "misspelt_layer"])
def test_in_process_errors_equal_a_fresh_interpreters(tmp_path, args, status, fragment):
    inside, real = _both("dream", NO_WEIGHTS, "--output=o.png", *args, cwd=tmp_path)
    assert (inside.returncode, inside.stdout, inside.stderr) == (
        real.returncode, real.stdout, real.stderr)
    assert real.returncode == status
    assert_one_line_error(inside, fragment)
    assert not list(tmp_path.iterdir())


def test_every_run_gets_fresh_flags(tmp_path):
    out = f"--output={tmp_path / 'o.png'}"
    assert_one_line_error(run_main("dream", NO_WEIGHTS, out, "--steps=0"), "iter_n")
    # --steps is back to its default: the next problem is the missing weights.
    assert_one_line_error(run_main("dream", NO_WEIGHTS, out, "--noise_size=64"),
                          "no converted weights")
    # zoom defines the same dream flags again, and flags of its own...
    assert_one_line_error(run_main("zoom", NO_WEIGHTS, f"--output_dir={tmp_path}",
                                   "--noise_size=64", "--frames=0"), "frames must be >= 1")
    # ...which are gone when dream.py runs next.
    proc = run_main("dream", NO_WEIGHTS, out, "--frames=2")
    assert proc.returncode == 2
    assert_one_line_error(proc, "frames")
    proc = run_main("classify", "--objective=inception_4c/output")
    assert proc.returncode == 2 and "objective" in proc.stderr
    assert_one_line_error(run_main("classify", NO_WEIGHTS, f"--input={tmp_path / 'x.png'}"),
                          "no such file")


_CRASH = """
from dream_jax import cli

def main():
    raise RuntimeError("a bug, not a user error")

if __name__ == "__main__":
    cli.run(main)
"""


def test_a_crash_is_a_traceback_as_in_a_real_interpreter(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(_CRASH)
    for proc in _both(str(script)):
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr
        assert "RuntimeError: a bug, not a user error" in proc.stderr
        with pytest.raises(AssertionError):
            assert_one_line_error(proc)


_NOISY = """
import os, sys, warnings
from absl import app, logging

def main(argv):
    print("printed")
    os.write(1, b"written to fd 1\\n")
    os.write(2, b"written to fd 2\\n")
    logging.warning("an absl warning")
    warnings.warn("a user warning")
    sys.exit(3)

if __name__ == "__main__":
    app.run(main)
"""


def test_output_is_captured_at_the_file_descriptors(tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text(_NOISY)
    for proc in (*_both(str(script)), run_main(str(script))):  # the warning shows every run
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == "printed\nwritten to fd 1\n"
        assert "written to fd 2" in proc.stderr
        assert "an absl warning" in proc.stderr
        assert "UserWarning: a user warning" in proc.stderr


_LEAKY = """
import logging, os, sys, warnings
import jax
from absl import app, flags
from absl import logging as absl_logging

flags.DEFINE_string("leaky", None, "A flag of this script only.")

def main(argv):
    os.environ["DREAM_JAX_LEAK"] = "1"
    sys.path.append("/leak")
    os.chdir(flags.FLAGS.leaky)
    jax.config.update("jax_compilation_cache_dir", flags.FLAGS.leaky)
    logging.root.addHandler(logging.NullHandler())
    absl_logging.set_verbosity(absl_logging.DEBUG)
    warnings.simplefilter("error")
    print(os.getcwd(), jax.config.jax_compilation_cache_dir, os.environ["DREAM_JAX_LEAK"])

if __name__ == "__main__":
    app.run(main)
"""


def _process_state() -> dict:
    import jax
    compile_cache = sys.modules.get("dream_jax.engine.compile_cache")
    return {
        "flags": sorted(flags.FLAGS), "parsed": flags.FLAGS.is_parsed(),
        "root_handlers": logging.root.handlers[:], "root_level": logging.root.level,
        "absl_verbosity": absl_logging.get_verbosity(),
        "absl_stream": absl_logging.get_absl_handler().python_handler.stream,
        "jax": {name: getattr(jax.config, name) for name in (
            "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")},
        "compile_cache": getattr(compile_cache, "_folder", None),
        "argv": sys.argv[:], "path": sys.path[:], "cwd": os.getcwd(), "env": dict(os.environ),
        "warning_filters": warnings.filters[:], "streams": (sys.stdout, sys.stderr),
        "fds": [(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2)],
    }


def test_nothing_leaks_out_of_a_run(tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(_LEAKY)
    before = _process_state()
    proc = run_main(str(script), f"--leaky={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{tmp_path} {tmp_path} 1\n"  # it did change all that, inside
    assert run_main("layers", "--height=64", "--width=64").returncode == 0  # enables the caches
    assert run_main("dream", NO_WEIGHTS, "--steps=0").returncode == 1
    assert run_main("dream", "--help").returncode in (0, 1)
    after = _process_state()
    assert {k: v for k, v in after.items() if before[k] != v} == {}
    assert "DREAM_JAX_LEAK" not in os.environ
