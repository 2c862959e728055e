"""One exception family for problems the user can fix (bad input, flags, files).

Scripts print `error: <message>` (one line: see `one_line`) and exit non-zero
for these; any other exception is a bug in dream_jax and keeps its traceback.
"""
import re

# Line breaks, other control characters and undecodable bytes, which a file name may hold.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """`text` with control characters (newlines in a file name, say) escaped as
    \\n, \\x1b, ...: a message stays one line, and a name shows what it holds."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                        text.strip())


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


class WeightsError(UserError):
    """Weights missing, corrupt, tampered with, or of the wrong shape."""


class ImageError(UserError):
    """An image that cannot be read, decoded or written."""
