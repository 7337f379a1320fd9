"""Test-wide JAX settings: silent rank promotion is an error here."""

import contextlib

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@contextlib.contextmanager
def x64():
    """Run a block with float64 enabled (jax.enable_x64, or the older experimental one)."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.7
        from jax.experimental import enable_x64 as ctx
    with ctx(True):
        yield


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)
