"""The README runs as written.

The README is read section by section (``## `` headings). Each section's code
blocks run in document order in one temporary folder, the way a reader pastes
them: a ```` ```python ```` block in a fresh interpreter (each is a complete
program that makes its own imports), a ```` ```sh ```` block line by line in
bash with this interpreter's ``bin`` folder (where ``jaxtransfer`` is
installed) first on ``PATH``. After a Python block come ``CLAIMS``: the
outputs the README's comments state (shapes, values).

Commands run as written except for what ``TINY`` appends (smaller samples and
images for ``rank``, which would otherwise take minutes per backbone on a CPU)
and the lines ``SKIP`` lists, each with the reason and the test that covers
it instead. Sections that load the zoo's backbones need their weights (a
download on first use, cached after). Every Python block is also checked
without running it: each ``jaxtransfer`` function it calls exists and accepts
the arguments it is given.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
SECTIONS = {
    m.group(1): m.group(2) for m in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", TEXT, flags=re.S | re.M)
}
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", flags=re.S | re.M)
BLOCKS = [(m.group(1), m.group(2)) for m in BLOCK.finditer(TEXT)]
PYTHON = [code for lang, code in BLOCKS if lang == "python"]

# What `make` and the protocols do is run by CI itself or by their own tests; a reader's own photo.
SKIP = {
    r"^make ": "make demo/test are CI's own commands; lint, bench and reports run the same code as the tests",
    r"^jaxtransfer reproduce ": "15-30 minutes each; the --quick runs are tests/apps/test_reproduce.py",
    r"^jaxtransfer zoo predict photo\.jpg": "the reader's photo; tests/cli/test_cli.py predicts PNGs",
}
TINY = {r"^jaxtransfer rank\b": "--max-samples 60 --image-size 32 --bootstrap 20 --pick-resamples 2"}


def python_block(containing: str) -> str:
    """The one Python block that contains ``containing``."""
    found = [code for code in PYTHON if containing in code]
    assert len(found) == 1, f"README python blocks containing {containing!r}: {len(found)}"
    return found[0]


# What the README's comments say each block gives, checked after it in the same interpreter.
CLAIMS = {
    "metrics.logme(16, num_target_classes=4)": """
        import numpy as np

        whole = float(jt.logme(features, labels, num_target_classes=4))
        np.testing.assert_allclose(float(score), whole, rtol=1e-4)
        np.testing.assert_allclose(float(score), -0.7243, atol=5e-5)  # the printed value
        assert isinstance(score, jax.Array)
        assert float(metric.stats.get_value().features.count) == 0  # reset
    """,
    "mesh=grid": """
        assert str(jt.score_matrix("logme", placed, labels).sharding.spec) == "P('devices', None)"
        for scores in (by_source, by_sample, both):
            np.testing.assert_allclose(np.asarray(scores), np.asarray(one), rtol=1e-5, atol=1e-6)
        assert len(jax.devices()) == 8
    """,
    "jt.score_matrix(jt.nce, sources, tasks)": """
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
    "zoo.load": """
        assert out.features.shape == (100, 1280), out.features.shape
        assert out.logits.shape == (100, 1000), out.logits.shape
        assert out.labels.shape == (100,), out.labels.shape
        assert out.layers["stage5"].shape == (100, 96), out.layers["stage5"].shape
        assert out.probabilities.shape == (100, 1000)
        assert np.isfinite(float(stats.linear_mse(l2=1.0))) and np.isfinite(float(stats.nce()))
        assert many.score("logme").shape == (2,)
        assert len(history.loss) == 5  # epochs=5
    """,
    'np.savez("mydata.npz"': """
        assert images.shape == (1797, 8, 8) and labels.shape == (1797, 2)
        assert sources.load("my_cnn.npz").taps(images[:2])["logits"].shape == (2, 2)
    """,
    "jax.value_and_grad(lambda x, y: -jt.logme": """
        import numpy as np

        np.testing.assert_allclose(float(value), 0.726, atol=5e-4)  # the printed value
        np.testing.assert_allclose(float(value), -float(jt.logme(np.asarray(x), np.asarray(y))), rtol=1e-5)
        assert grad.shape == (200, 16) and bool(jnp.isfinite(grad).all())
    """,
    "jt.rank(": """
        assert [p.target for p in result.picks] == ["odd", "ge5"]
        assert result.sources == ["mine", "digits", "mobilenet_v2:stage5"]
        assert result.scores["logme"].shape == result.actual.shape == (3, 2)
        for j, p in enumerate(result.picks):
            assert p.source == result.sources[int(np.argmax(result.scores["logme"][:, j]))]
            best = result.actual[:, j].max()
            assert abs(p.regret - (best - result.actual[result.sources.index(p.source), j])) < 1e-9
    """,
}


def program(code: str) -> str:
    claims = [textwrap.dedent(c) for key, c in CLAIMS.items() if key in code]
    return code + "\n# --- what the README says this gives\n" + "".join(claims)


def run_python(code: str, cwd: Path, timeout: float) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", program(code)], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{proc.stderr[-4000:]}"


def commands(code: str) -> list[str]:
    """The commands of a shell block: its lines without comments, as the reader types them."""
    out = []
    for line in code.splitlines():
        command = line.split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            out.append(command)
    return out


def run_sh(command: str, cwd: Path, timeout: float) -> None:
    for pattern, extra in TINY.items():
        if re.search(pattern, command):
            command += " " + extra
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, f"README command failed: {command}\n--- stderr ---\n{proc.stderr[-4000:]}"


def test_every_python_block_is_claimed():
    for code in PYTHON:
        assert any(key in code for key in CLAIMS), f"a README block has no CLAIMS:\n{code[:300]}"


def test_skipped_lines_exist():
    every = [c for lang, code in BLOCKS if lang == "sh" for c in commands(code)]
    for pattern in SKIP:
        assert any(re.search(pattern, c) for c in every), f"SKIP {pattern!r} matches no README command"


@pytest.mark.parametrize("section", [s for s, body in SECTIONS.items() if BLOCK.search(body)])
def test_section_runs(section, tmp_path):
    ran = 0
    for m in BLOCK.finditer(SECTIONS[section]):
        lang, code = m.group(1), m.group(2)
        if lang == "python":
            run_python(code, tmp_path, timeout=900)
            ran += 1
            continue
        for command in commands(code):
            if any(re.search(pattern, command) for pattern in SKIP):
                continue
            run_sh(command, tmp_path, timeout=900)
            ran += 1
    assert ran or section == "Development", f"section {section!r} ran nothing"


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


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_block_calls_existing_functions_with_accepted_arguments(index):
    tree = ast.parse(PYTHON[index])
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
    assert checked >= 1, "a README block checks no jaxtransfer call"
