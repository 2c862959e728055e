"""One exception family for problems the user can fix (bad input, flags, files).

Scripts print `error: <message>` (one line) and exit non-zero for these; any
other exception is a bug in dream_jax and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, explained in one line."""


class WeightsError(UserError):
    """Weights missing, corrupt, tampered with, or of the wrong shape."""


class ImageError(UserError):
    """An image that cannot be read, decoded or written."""
