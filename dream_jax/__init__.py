"""dream_jax: DeepDream on BVLC GoogLeNet in JAX.

    import dream_jax
    out = dream_jax.dream(rgb_uint8, objective="inception_4c/output")
"""
__version__ = "0.1.0"

from dream_jax import dream, objectives  # noqa: E402  (dream is callable: the one-call API)

__all__ = ["dream", "objectives", "__version__"]
