"""Which build made a picture: identical bytes are promised only on the same one.

XLA may fuse, order and round differently from one jaxlib release (or backend,
or device) to the next, and a dream_jax release may draw its randomness or
order its arithmetic differently, so a replay on another build gives the same
request but not always the same pixels. Every record carries `current()`; a replay
says in one line when the build differs, then goes on.
"""
from __future__ import annotations

import jax
import jaxlib
from absl import logging

from dream_jax import __version__


def current() -> dict[str, str]:
    """The build a picture is made on: dream_jax, jax, jaxlib, backend and device kind."""
    return {"dream_jax": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(), "device": jax.devices()[0].device_kind}


def describe(build: dict) -> str:
    return (f"dream_jax {build.get('dream_jax', '?')}, jax {build.get('jax', '?')} "
            f"(jaxlib {build.get('jaxlib', '?')}) on "
            f"{build.get('backend', '?')} {build.get('device', '')}".rstrip())


def difference(recorded: dict | None) -> str | None:
    """None when `recorded` is this build; else one line saying how it differs."""
    now = current()
    if recorded == now:
        return None
    if not recorded:
        return (f"no jax build is recorded in it; this is {describe(now)}: "
                f"the pixels may differ")
    return f"it was made with {describe(recorded)}, this is {describe(now)}: the pixels may differ"


def warn_if_other(record: dict, origin: str) -> None:
    """One warning line when `record` was made on another build (replay goes on)."""
    message = difference(record.get("build"))
    if message:
        logging.warning("replaying %s: %s", origin, message)
