"""The README's Python examples run as written.

Every ```` ```python ```` block of README.md is a complete program (it makes its
own imports), so each runs on its own, in a fresh interpreter in a temporary
folder, the way a reader pastes it, followed by ``CLAIMS``: the outputs the
README's comments state (shapes, values).

Blocks listed in ``SLOW`` need the zoo's weights (a download of about 73 MB on
first use) and close to a minute of CPU, so they run only in
``test_slow_block_runs`` (marked ``slow`` and ``network``, as the zoo's own
pretrained tests). Every block, those included, is also checked without running
it: each ``jaxtransfer`` function it calls exists and accepts the arguments it
is given.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def block(containing: str) -> int:
    """The index of the one block that contains ``containing``."""
    found = [i for i, code in enumerate(BLOCKS) if containing in code]
    assert len(found) == 1, f"README python blocks containing {containing!r}: {found}"
    return found[0]


QUICK_START = block("jt.score_matrix")
BACKBONES = block("zoo.load")

# What the README's comments say each block gives, checked after it in the same interpreter.
CLAIMS = {
    QUICK_START: """
        def entropy(counts):
            p = counts[counts > 0] / counts.sum()
            return -(p * np.log(p)).sum()

        joint = np.histogram2d(z, y, bins=(5, 3))[0]
        h_y_given_z = entropy(joint.ravel()) - entropy(joint.sum(axis=1))
        np.testing.assert_allclose(jt.nce(z, y), -h_y_given_z, rtol=1e-5)  # -H(Y|Z)
        np.testing.assert_allclose(jt.hardness(y), entropy(np.bincount(y)), rtol=1e-5)  # H(Y)
        assert jt.linear_mse(features, targets, l2=1.0).shape == ()
        assert jt.linear_mse(features, targets, l2=[0.0, 0.1, 1.0]).shape == (3,)
        assert scores.shape == (64, 40)
    """,
    BACKBONES: """
        assert out.features.shape == (100, 1280), out.features.shape
        assert out.logits.shape == (100, 1000), out.logits.shape
        assert out.labels.shape == (100,), out.labels.shape
        assert out.layers["stage5"].shape == (100, 96), out.layers["stage5"].shape
        assert out.probabilities.shape == (100, 1000)
        assert np.isfinite(float(stats.linear_mse(l2=1.0))) and np.isfinite(float(stats.nce()))
        assert len(history.loss) == 5  # epochs=5
    """,
}
SLOW = {BACKBONES: "loads a zoo backbone (weights downloaded on first use) and trains a CNN: about 50 s"}


def run(code: str, cwd: Path, timeout: float) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"


def program(index: int) -> str:
    return (
        BLOCKS[index] + "\n# --- what the README says this gives\n" + textwrap.dedent(CLAIMS.get(index, ""))
    )


def test_every_block_is_known():
    assert len(BLOCKS) == 2, "a block was added or removed: give it CLAIMS (and a SLOW reason if it is slow)"


@pytest.mark.parametrize("index", [i for i in range(len(BLOCKS)) if i not in SLOW])
def test_block_runs(index, tmp_path):
    run(program(index), tmp_path, timeout=120)


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("index", sorted(SLOW))
def test_slow_block_runs(index, tmp_path):
    run(program(index), tmp_path, timeout=600)


# ----------------------------------------------------------------------------- without running
def _bound_names(tree) -> dict[str, object]:
    """Names the block binds to jaxtransfer modules or objects by its imports."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0].startswith("jaxtransfer"):
                    out[alias.asname or alias.name.split(".")[0]] = importlib.import_module(
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxtransfer"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"from {node.module} import {alias.name}: no such name"
                out[alias.asname or alias.name] = getattr(module, alias.name)
    return out


def _resolve(node, names):
    """The object a dotted expression ``a.b.c`` names, when ``a`` is a jaxtransfer name."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, names)
        if base is None:
            return None
        assert hasattr(base, node.attr), f"{ast.unparse(node)}: {base.__name__} has no {node.attr!r}"
        return getattr(base, node.attr)
    return None


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_calls_existing_functions_with_accepted_arguments(index):
    tree = ast.parse(BLOCKS[index])
    names = _bound_names(tree)
    checked = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = _resolve(node.func, names)
        if fn is None or not callable(fn):
            continue
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            continue
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        try:
            signature.bind(*node.args, **{k.arg: k.value for k in node.keywords})
        except TypeError as err:
            raise AssertionError(f"README: {ast.unparse(node)}: {err}") from None
        checked += 1
    assert checked >= 3
