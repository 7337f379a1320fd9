"""score_matrix on one device at scale: chunk size, validation share, extra memory (issue #12).

Three measurements, each a ratio inside one run (warm-up, ``block_until_ready``,
medians):

* **batch sweep** — ``score_matrix`` of linear_mse (λ = 1: the Cholesky route)
  and logme (the spectrum) with ``batch_size`` 1, 2, 4, 8, 16 sources per
  step; time relative to ``batch_size=1``. Before the kernels' uniform
  branches a chunk ran every factorisation route (2.1× slower at 8).
* **validation share** — a public ``linear_mse`` call on NumPy inputs against
  the same jitted computation on arrays already on the device:
  (public − core) / public.
* **extra memory** — peak RSS of ``score_matrix("linear_mse")`` in a fresh
  process, minus the RSS once its inputs exist, as a multiple of the input
  size: for NumPy inputs (which a CPU backend copies once into its own
  buffers) and for inputs already on the device.

    OPENBLAS_NUM_THREADS=1 python bench/bench_scale.py            # JSON under jaxtransfer-output/bench/
    python bench/bench_scale.py --tiny --out /tmp/scale.json       # seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxtransfer as jt
from jaxtransfer.apps import time_call
from jaxtransfer.estimators._base import _pair


def _median_time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call (the package's own timing helper)."""
    return time_call(fn, repeats=repeats, warmup=1)["median_s"]


def batch_sweep(s, t, n, d, sizes, repeats):
    rng = np.random.default_rng(0)
    f = jnp.asarray(np.maximum(rng.normal(size=(s, n, d)), 0).astype(np.float32) + 1)
    y = jnp.asarray(rng.integers(0, 10, (t, n)))
    onehot = jax.nn.one_hot(y, 10)
    out = {}
    for name, targets, opts in (("linear_mse", onehot, {"l2": 1.0}), ("logme", y, {})):
        row = {}
        for b in sizes:
            call = partial(jt.score_matrix, name, f, targets, batch_size=b, **opts)
            row[b] = _median_time(call, repeats)
        out[name] = {
            "seconds": {str(b): v for b, v in row.items()},
            "relative_to_1": {str(b): v / row[1] for b, v in row.items()},
        }
    return out


def validation_share(n, d, repeats):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=(n, 4)).astype(np.float32)
    info = jt.linear_mse.info
    checked = info.check(f, y, {"l2": 1.0}, 0)
    static = tuple(sorted(checked.static.items()))

    def core():
        return _pair(
            checked.source,
            checked.target,
            None,
            checked.dynamic,
            info=info,
            static=static,
            finish=info.finish,
        )

    public = _median_time(lambda: jt.linear_mse(f, y, l2=1.0), repeats)
    inner = _median_time(core, repeats)
    return {"public_s": public, "core_s": inner, "share": max(public - inner, 0) / public}


_MEMORY_CHILD = """
import resource, sys, json
import numpy as np, jax, jax.numpy as jnp
import jaxtransfer as jt
s, t, n, d = map(int, sys.argv[1:5])
on_device = sys.argv[5] == "device"
if on_device:  # made on the device: score_matrix makes no copy of them
    f = jax.random.normal(jax.random.key(0), (s, n, d))
    y = jax.random.normal(jax.random.key(1), (t, n, 2))
else:
    rng = np.random.default_rng(0)
    f = rng.standard_normal(size=(s, n, d), dtype=np.float32)  # float32 directly: no float64 temporary
    y = rng.standard_normal(size=(t, n, 2), dtype=np.float32)
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
def peak():  # VmHWM, the peak RSS since the last reset
    line = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0]
    return int(line.split()[1]) * 1024
jax.block_until_ready(jt.score_matrix("linear_mse", f[:1, :8], y[:1, :8]))  # runtime warm, tiny
jax.block_until_ready((f, y))
with open('/proc/self/clear_refs', 'w') as fh:  # reset the peak: making the inputs set their own
    fh.write('5')
base = rss()
out = jax.block_until_ready(jt.score_matrix("linear_mse", f, y))
print(json.dumps({"input_bytes": f.nbytes + y.nbytes, "rss_before": base, "peak_rss": peak()}))
"""


def extra_memory(s, t, n, d):
    """Peak RSS of score_matrix above the RSS with its inputs, over the input size: NumPy inputs
    (one copy to the device, inherent on a CPU) and inputs already on the device."""
    out = {}
    for where in ("numpy", "device"):
        run = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, str(s), str(t), str(n), str(d), where],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(run.stdout.strip().splitlines()[-1])
        r["extra_over_input"] = (r["peak_rss"] - r["rss_before"]) / r["input_bytes"]
        out[where] = r
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes (smoke test)")
    parser.add_argument("--out", default="jaxtransfer-output/bench/scale.json")
    args = parser.parse_args(argv)
    if args.tiny:
        sweep = dict(s=4, t=3, n=200, d=16, sizes=(1, 2, 4), repeats=2)
        valid = dict(n=500, d=32, repeats=3)
        memory = dict(s=4, t=4, n=2000, d=64)
    else:
        sweep = dict(s=32, t=16, n=2000, d=128, sizes=(1, 2, 4, 8, 16), repeats=5)
        valid = dict(n=20000, d=256, repeats=7)
        memory = dict(s=64, t=64, n=20000, d=256)
    result = {
        "config": {
            "sweep": {k: list(v) if isinstance(v, tuple) else v for k, v in sweep.items()},
            "validation": valid,
            "memory": memory,
        },
        "environment": {
            "jax": jax.__version__,
            "devices": [str(x) for x in jax.devices()],
            "python": platform.python_version(),
        },
        "batch_sweep": batch_sweep(**sweep),
        "validation": validation_share(**valid),
        "memory": extra_memory(**memory),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for name, row in result["batch_sweep"].items():
        print(
            name, "time relative to batch_size=1:", {b: round(v, 2) for b, v in row["relative_to_1"].items()}
        )
    v = result["validation"]
    print(
        f"validation share of a public linear_mse call: {v['share']:.1%} "
        f"({v['public_s'] * 1e3:.2f} ms public, {v['core_s'] * 1e3:.2f} ms core)"
    )
    for where, m in result["memory"].items():
        print(
            f"score_matrix extra memory, {where} input: {m['extra_over_input']:.2f}x its input "
            f"({m['input_bytes'] / 2**20:.0f} MiB)"
        )
    print("wrote", out)


if __name__ == "__main__":
    main()
