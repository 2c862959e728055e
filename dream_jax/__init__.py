"""dream_jax: DeepDream on BVLC GoogLeNet in JAX.

    import dream_jax
    out = dream_jax.dream(rgb_uint8, objective="inception_4c/output")
"""
__version__ = "0.3.0"

from dream_jax import objectives  # noqa: E402
from dream_jax.api import dream  # noqa: E402
from dream_jax.engine.config import DreamConfig  # noqa: E402

__all__ = ["dream", "DreamConfig", "objectives", "__version__"]
