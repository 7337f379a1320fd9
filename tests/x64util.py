"""float64 for a block of a test: ``with x64(): ...``."""

import contextlib

import jax


@contextlib.contextmanager
def x64(enabled: bool = True):
    """Enable (or, with ``False``, disable) float64 for a block (jax.enable_x64, or the experimental
    one on older jax)."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.7
        from jax.experimental import enable_x64 as ctx
    with ctx(enabled):
        yield
