"""Streamed statistics against the whole-array estimators: discrepancy and time, in one run.

For each streaming estimator (``jaxtransfer.streaming``), the features are fed
in batches of 256 to ``update`` (one jitted step per batch), ``finalize``
gives the score; the whole-array estimator scores the concatenated samples.
Reported per case and dtype: |streamed − whole-array| (absolute and relative)
with float32 and with float64 accumulation (x64 on), and the median times of
the streamed route (all updates + finalize) and of the whole-array call, each
after a warm-up (compile excluded), ending in ``block_until_ready``.

Cases: ReLU features with a mean offset (n=2000, d=256, C=10 classes,
informative means), and an ill-conditioned case (column scales spread over
1e-3..1, condition number ~1e3·√d).

    python bench/bench_streaming.py                    # default sizes; JSON under jaxtransfer-output/bench/
    python bench/bench_streaming.py --tiny --out /tmp/streaming.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxtransfer as jt
from jaxtransfer import streaming as st
from jaxtransfer.apps import time_call

BATCH = 256


def make_case(kind, n, d, c, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    means = rng.normal(size=(c, d))
    pre = rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d)) + 0.7 * means[y] + 0.5
    f = np.maximum(pre, 0) + 2.0  # post-ReLU with a mean offset
    if kind == "ill_conditioned":
        f = f * np.logspace(-3, 0, d)[None, :]
    z = np.argmax(f[:, :c] + rng.normal(size=(n, c)), axis=1)
    logits = f[:, :c] * 2 + rng.normal(size=(n, c))
    values = f[:, :3] @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(n, 2))
    return {"f": f, "y": y, "z": z, "logits": logits, "values": values, "c": c}


def estimators(x, d, c):
    """name -> (streaming object, init(dtype), batch args(sl), whole-array call, finalize opts)."""
    return {
        "linear_mse": (
            st.linear_mse,
            lambda dt: st.linear_mse.init(d, 2, dtype=dt),
            lambda a, s: (a["f"][s], a["values"][s]),
            lambda a: jt.linear_mse(a["f"], a["values"], l2=1.0),
            {"l2": 1.0},
        ),
        "logme": (
            st.logme,
            lambda dt: st.logme.init(d, num_target_classes=c, dtype=dt),
            lambda a, s: (a["f"][s], a["y"][s]),
            lambda a: jt.logme(a["f"], a["y"], num_target_classes=c),
            {},
        ),
        "hscore": (
            st.hscore,
            lambda dt: st.hscore.init(d, c, dtype=dt),
            lambda a, s: (a["f"][s], a["y"][s]),
            lambda a: jt.hscore(a["f"], a["y"], num_target_classes=c),
            {},
        ),
        "shrinkage_hscore": (
            st.shrinkage_hscore,
            lambda dt: st.shrinkage_hscore.init(d, c, dtype=dt),
            lambda a, s: (a["f"][s], a["y"][s]),
            lambda a: jt.shrinkage_hscore(a["f"], a["y"], num_target_classes=c),
            {},
        ),
        "transrate": (
            st.transrate,
            lambda dt: st.transrate.init(d, c, dtype=dt),
            lambda a, s: (a["f"][s], a["y"][s]),
            lambda a: jt.transrate(a["f"], a["y"], num_target_classes=c),
            {},
        ),
        "gbc": (
            st.gbc,
            lambda dt: st.gbc.init(d, c, dtype=dt),
            lambda a, s: (a["f"][s], a["y"][s]),
            lambda a: jt.gbc(a["f"], a["y"], num_target_classes=c),
            {},
        ),
        "nce": (
            st.nce,
            lambda dt: st.nce.init(c, c),
            lambda a, s: (a["z"][s], a["y"][s]),
            lambda a: jt.nce(a["z"], a["y"], num_source_classes=c, num_target_classes=c),
            {},
        ),
        "leep": (
            st.leep,
            lambda dt: st.leep.init(c, c, logits=True, dtype=dt),
            lambda a, s: (a["logits"][s], a["y"][s]),
            lambda a: jt.leep(a["logits"], a["y"], logits=True, num_target_classes=c),
            {},
        ),
    }


def streamed(obj, init, args, opts, arrays, dtype, n):
    slices = [slice(i, min(i + BATCH, n)) for i in range(0, n, BATCH)]

    def one_pass(stats):
        for s in slices:
            stats = obj.update(stats, *args(arrays, s))
        return stats

    stats = one_pass(init(dtype))
    if isinstance(obj, st.TwoPassStreaming):
        stats = one_pass(obj.second_pass(stats))
    return jax.block_until_ready(obj.finalize(stats, **opts))


def precision(enabled: bool):
    """float64 (x64) on or off for a block: float32 runs must not be promoted to float64."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.7
        from jax.experimental import enable_x64 as ctx
    return ctx(enabled)


def measure(obj, init, args, whole, opts, x, dt, n, repeats, ref64):
    arrays = {
        k: jnp.asarray(v, dt) if np.asarray(v).dtype.kind == "f" else jnp.asarray(v) for k, v in x.items()
    }
    want = float(whole(arrays))
    got = float(streamed(obj, init, args, opts, arrays, dt, n))
    return {
        "streamed": got,
        "whole_array": want,
        "abs_diff": abs(got - want),
        "rel_diff": abs(got - want) / max(abs(want), 1e-300),
        "streamed_vs_float64_whole": abs(got - ref64),
        "whole_vs_float64_whole": abs(want - ref64),
        "streamed_s": time_call(lambda: streamed(obj, init, args, opts, arrays, dt, n), repeats)["median_s"],
        "whole_s": time_call(lambda: whole(arrays), repeats)["median_s"],
    }


def run(tiny: bool, repeats: int) -> dict:
    n, d, c = (300, 16, 4) if tiny else (2000, 256, 10)
    rows = []
    for kind in ("relu_offset", "ill_conditioned"):
        x = make_case(kind, n, d, c)
        for name, (obj, init, args, whole, opts) in estimators(x, d, c).items():
            row = {"case": kind, "estimator": name}
            x = {k: v for k, v in x.items() if k != "c"}
            with precision(True):
                ref64 = float(whole({k: jnp.asarray(v) for k, v in x.items()}))
                row["float64"] = measure(obj, init, args, whole, opts, x, jnp.float64, n, repeats, ref64)
            with precision(False):
                row["float32"] = measure(obj, init, args, whole, opts, x, jnp.float32, n, repeats, ref64)
            rows.append(row)
    return {
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "sizes": {"n": n, "d": d, "classes": c, "batch": BATCH},
        "repeats": repeats,
        "results": rows,
    }


def table(report: dict) -> str:
    lines = [
        "| case | estimator | f32 |Δ| (rel) | f64 |Δ| | f32 streamed vs f64 whole | f32 whole vs f64 whole "
        "| f32 streamed s | f32 whole s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        a, b = r["float32"], r["float64"]
        lines.append(
            f"| {r['case']} | {r['estimator']} | {a['abs_diff']:.2e} ({a['rel_diff']:.1e}) "
            f"| {b['abs_diff']:.1e} "
            f"| {a['streamed_vs_float64_whole']:.1e} | {a['whole_vs_float64_whole']:.1e} "
            f"| {a['streamed_s']:.4f} | {a['whole_s']:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="jaxtransfer-output/bench/streaming.json", help="JSON report path")
    args = parser.parse_args(argv)
    report = run(args.tiny, 2 if args.tiny else args.repeats)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
