"""Test-wide JAX settings: silent rank promotion is an error; matmuls at full float32 precision."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# float32 matmuls at full precision on every platform (GPUs default to TF32), so that tolerances
# against float64 references mean the same on CPU and GPU
jax.config.update("jax_default_matmul_precision", "highest")


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
