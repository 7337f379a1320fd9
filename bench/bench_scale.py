"""score_matrix on one device at scale: chunk size, validation share, extra memory (issue #12).

Three measurements, each a ratio inside one run (warm-up, ``block_until_ready``,
medians):

* **batch sweep** — ``score_matrix`` of linear_mse (λ = 1: the Cholesky route)
  and logme (the spectrum) with ``batch_size`` 1, 2, 4, 8, 16 sources per
  step; time relative to ``batch_size=1``. Before the kernels' uniform
  branches a chunk ran every factorisation route (2.1× slower at 8).
* **validation share** — public ``linear_mse``, ``logme`` and ``nce`` calls on
  NumPy inputs against the same jitted computation on arrays already checked
  and on the device: (public − core) / public, the median over rounds that
  time the two back to back (alternating which goes first), of wall-clock
  and of CPU time (which a busy machine's scheduling does not inflate).
* **extra memory** — peak RSS of ``score_matrix("linear_mse")`` in a fresh
  process, minus the RSS once its inputs exist, as a multiple of the input
  size: for NumPy inputs (which a CPU backend copies once into its own
  buffers) and for inputs already on the device.

    OPENBLAS_NUM_THREADS=1 python bench/bench_scale.py            # JSON under jaxtransfer-output/bench/
    python bench/bench_scale.py --tiny --out /tmp/scale.json       # seconds
    python bench/bench_scale.py --only validation,memory           # some of sweep, validation, memory
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxtransfer as jt
from jaxtransfer.estimators import _matrix_core
from jaxtransfer.estimators._base import _pair


def batch_sweep(s, t, n, d, sizes, repeats):
    """``score_matrix`` at each ``batch_size``, two ways, timed in interleaved rounds (wall and CPU time):

    * ``public``: what a user gets — on a CPU the sources of a step run one
      after another for these estimators (``SEQUENTIAL_PLATFORMS``);
    * ``vmapped``: the chunk vmapped as on an accelerator (one factorisation
      route per chunk), the rule switched off: what batching itself costs
      or saves on this backend.

    Each figure is relative to ``batch_size=1`` (the same program either way).
    """
    rng = np.random.default_rng(0)
    f = jnp.asarray(np.maximum(rng.normal(size=(s, n, d)), 0).astype(np.float32) + 1)
    y = jnp.asarray(rng.integers(0, 10, (t, n)))
    onehot = jax.nn.one_hot(y, 10)
    rule = _matrix_core.SEQUENTIAL_PLATFORMS
    out = {}
    for name, targets, opts in (("linear_mse", onehot, {"l2": 1.0}), ("logme", y, {})):
        calls = {}
        for b in sizes:
            calls[f"public {b}"] = partial(jt.score_matrix, name, f, targets, batch_size=b, **opts)
            if b > 1:
                calls[f"vmapped {b}"] = partial(_without_rule, calls[f"public {b}"])
        times = _interleaved_times(calls, repeats)
        assert _matrix_core.SEQUENTIAL_PLATFORMS == rule
        row = {}
        for how in ("public", "vmapped"):
            for clock in ("wall", "cpu"):
                base = times["public 1"][clock]
                row[f"{how}_{clock}_relative_to_1"] = {
                    str(b): times[f"{how} {b}"][clock] / base for b in sizes if f"{how} {b}" in times
                }
        row["seconds"] = {k: v["wall"] for k, v in times.items()}
        out[name] = row
    return out


def _without_rule(call):
    """``call()`` with chunks of sources vmapped on every platform (``SEQUENTIAL_PLATFORMS`` empty)."""
    kept = _matrix_core.SEQUENTIAL_PLATFORMS
    _matrix_core.SEQUENTIAL_PLATFORMS = frozenset()
    try:
        return call()
    finally:
        _matrix_core.SEQUENTIAL_PLATFORMS = kept


def _interleaved_times(calls: dict, repeats: int) -> dict:
    """Median wall and CPU seconds of each of ``calls`` (name -> function), timed in ``repeats``
    rounds that run every call once, in an order rotated each round (so a load spike lands on all
    of them, and none always runs first); each call ends in ``block_until_ready``."""
    for fn in calls.values():  # warm-up: compilation, first transfers
        jax.block_until_ready(fn())
    names = list(calls)
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(calls[k]())
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - start_cpu)
    return {k: {"wall": float(np.median(wall[k])), "cpu": float(np.median(cpu[k])), "wall_all": wall[k],
                "cpu_all": cpu[k]} for k in names}  # fmt: skip


def _interleaved_share(public, core, repeats: int) -> dict:
    """(public − core) / public from ``repeats`` rounds that time both calls back to back.

    The two run in alternating order (:func:`_interleaved_times`) and the
    share is the median of the per-round shares: a load spike that slows one
    round slows both of its calls, so it cancels in the round's ratio instead
    of landing on one side of a difference of two medians. ``cpu_share`` is
    the same from the process's CPU time (all threads): the work that
    validation adds, which a busy machine's scheduling delays do not inflate.
    """
    times = _interleaved_times({"public": public, "core": core}, repeats)
    pub, inner = np.array(times["public"]["wall_all"]), np.array(times["core"]["wall_all"])
    shares = 1 - inner / pub
    cpu = 1 - np.array(times["core"]["cpu_all"]) / np.array(times["public"]["cpu_all"])
    return {
        "public_s": float(np.median(pub)),
        "core_s": float(np.median(inner)),
        "share": float(np.median(shares)),  # may be slightly negative: noise around a zero share
        "share_quartiles": [float(np.quantile(shares, 0.25)), float(np.quantile(shares, 0.75))],
        "overhead_s": float(np.median(pub - inner)),  # per round: what the public call adds
        "cpu_share": float(np.median(cpu)),
        "repeats": repeats,
    }


def _core(fn, source, target, options):
    """The jitted one-pair computation of ``fn`` on inputs validated (and put on the device) once."""
    info = fn.info
    checked = info.check(source, target, options, 0)
    static = tuple(sorted(checked.static.items()))
    args = (checked.source, checked.target, None, checked.dynamic)
    return partial(_pair, *args, info=info, static=static, finish=info.finish)


def validation_share(n, d, repeats):
    """Share of validation in public one-pair calls on NumPy inputs (n samples, d float32 features):
    linear_mse (λ = 1, 4 target columns), logme (10 classes) and nce (50 source × 10 target classes)."""
    rng = np.random.default_rng(1)
    f = rng.standard_normal((n, d), dtype=np.float32)
    values = rng.standard_normal((n, 4), dtype=np.float32)
    labels = rng.integers(0, 10, n)
    source_labels = rng.integers(0, 50, n)
    cases = {
        "linear_mse": (jt.linear_mse, f, values, {"l2": 1.0}),
        "logme": (jt.logme, f, labels, {}),
        "nce": (jt.nce, source_labels, labels, {}),
    }
    out = {}
    for name, (fn, source, target, opts) in cases.items():
        public = partial(fn, source, target, **opts)
        out[name] = _interleaved_share(public, _core(fn, source, target, opts), repeats)
    return out


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


_PARTS = ("sweep", "validation", "memory")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes (smoke test)")
    parser.add_argument("--out", default="jaxtransfer-output/bench/scale.json")
    parser.add_argument("--only", default=",".join(_PARTS), help="comma-separated parts (default: all)")
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(_PARTS))
    if unknown:
        parser.error(f"--only got unknown part(s) {', '.join(unknown)}; expected some of {', '.join(_PARTS)}")
    if args.tiny:
        sweep = dict(s=4, t=3, n=200, d=16, sizes=(1, 2, 4), repeats=2)
        valid = dict(n=500, d=32, repeats=5)
        memory = dict(s=4, t=4, n=2000, d=64)
    else:
        sweep = dict(s=32, t=16, n=2000, d=128, sizes=(1, 2, 4, 8, 16), repeats=5)
        valid = dict(n=20000, d=256, repeats=101)
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
    }
    if "sweep" in parts:
        result["batch_sweep"] = batch_sweep(**sweep)
    if "validation" in parts:
        result["validation"] = validation_share(**valid)
    if "memory" in parts:
        result["memory"] = extra_memory(**memory)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for name, row in result.get("batch_sweep", {}).items():
        for key in ("public_wall", "public_cpu", "vmapped_wall", "vmapped_cpu"):
            rel = row[f"{key}_relative_to_1"]
            print(f"{name} {key.replace('_', ' ')} time relative to batch_size=1:",
                  {b: round(v, 2) for b, v in rel.items()})  # fmt: skip
    for name, v in result.get("validation", {}).items():
        q25, q75 = v["share_quartiles"]
        print(
            f"validation share of a public {name} call: {v['share']:.1%} (quartiles {q25:.1%}, {q75:.1%}; "
            f"of CPU time {v['cpu_share']:.1%}; "
            f"{v['public_s'] * 1e3:.2f} ms public, {v['core_s'] * 1e3:.2f} ms core, "
            f"{v['overhead_s'] * 1e3:.2f} ms added; {v['repeats']} rounds)"
        )
    for where, m in result.get("memory", {}).items():
        print(
            f"score_matrix extra memory, {where} input: {m['extra_over_input']:.2f}x its input "
            f"({m['input_bytes'] / 2**20:.0f} MiB)"
        )
    print("wrote", out)


if __name__ == "__main__":
    main()
