"""Running absl scripts so that user mistakes are one line, never a traceback.

A `UserError` (bad image, flag value, weights) prints `error: <message>` on
stderr and exits 1; a flag that fails to parse prints one line and exits 2.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Mapping

from absl import app, flags, logging

from dream_jax.model import caffe_ops, weights
from dream_jax.engine import compile_cache
from dream_jax.errors import UserError, one_line


def fail(message: str, code: int = 1):
    print(f"error: {one_line(message)}", file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e).splitlines()[0], code=2)


# Environment variables that set a flag's default in every script that has the flag.
ENVIRONMENT_DEFAULTS = {caffe_ops.KERNELS_ENV: "kernels", weights.WEIGHTS_ENV: "weights"}


def apply_environment(environ: Mapping[str, str]) -> None:
    """The environment, read once at the edge: each variable of
    ENVIRONMENT_DEFAULTS becomes its flag's default (a flag given on the
    command line still wins)."""
    for variable, name in ENVIRONMENT_DEFAULTS.items():
        value = environ.get(variable)
        if value and name in flags.FLAGS:
            try:
                flags.FLAGS.set_default(name, value)
            except flags.IllegalFlagValueError as e:
                fail(f"${variable}: {str(e).splitlines()[0]}", code=2)


def run(main: Callable[[], None]) -> None:
    """Parse flags, call main(); positional arguments are refused."""
    def wrapped(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected positional arguments {argv[1:]}; every option is a --flag", code=2)
        apply_environment(os.environ)
        if not flags.FLAGS["verbosity"].present:  # keep JAX's backend chatter off stderr
            logging.set_verbosity(logging.WARNING)
        compile_cache.enable(compile_cache.default_folder(os.environ))
        try:
            main()
        except UserError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except MemoryError:
            fail("out of memory (try a smaller image, --max_side or --memory_budget)")

    app.run(wrapped, flags_parser=_parse_flags)
