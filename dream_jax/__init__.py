"""dream_jax: DeepDream on BVLC GoogLeNet in JAX."""
__version__ = "0.1.0"
