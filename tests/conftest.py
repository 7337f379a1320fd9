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


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop each test module's compiled programs when it ends.

    Every XLA:CPU executable keeps memory mappings alive; a whole run of the
    suite in one process otherwise passes Linux's limit of 65,530 mappings per
    process (vm.max_map_count) and XLA aborts inside a compile.
    """
    yield
    import gc

    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True, scope="session")
def _vmapped_chunks_on_cpu():
    """Run ``score_matrix``'s chunks of several sources side by side under ``vmap``, as on a GPU.

    On a CPU they run one after another (``SEQUENTIAL_PLATFORMS``), which
    would leave the batched route — the one accelerators take, with the
    kernels' one-route-per-chunk branches — untested here. Its own test
    (tests/estimators/test_score_matrix.py) restores the CPU rule.
    """
    from jaxtransfer.estimators import _matrix_core

    kept = _matrix_core.SEQUENTIAL_PLATFORMS
    _matrix_core.SEQUENTIAL_PLATFORMS = frozenset()
    yield
    _matrix_core.SEQUENTIAL_PLATFORMS = kept
