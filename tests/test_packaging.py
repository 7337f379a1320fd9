"""The built wheel installs `jaxtransfer` and `jaxtransfer_kernels`, and no top-level `kernels`."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_has_no_top_level_kernels(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("jaxtransfer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert "kernels" not in top
    assert {"jaxtransfer", "jaxtransfer_kernels"} <= top
    assert "jaxtransfer/py.typed" in names and "jaxtransfer_kernels/py.typed" in names
    assert "jaxtransfer_kernels/_ridge.py" in names
    assert "jaxtransfer/models/zoo/_torch_format.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "jaxtransfer = jaxtransfer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_kernels_import_only_jax_and_numpy():
    code = (
        "import sys, jaxtransfer_kernels; "
        "bad = [m for m in ('flax', 'optax', 'jaxtransfer', 'sklearn', 'scipy') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    # jax itself imports scipy on some versions; only our own layering is checked strictly
    assert "'jaxtransfer'" not in out and "flax" not in out and "optax" not in out and "sklearn" not in out
