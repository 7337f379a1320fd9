"""float32 against float64 for every estimator, on features built to be hard for float32.

Each case draws features with a chosen singular spectrum (condition number 1 to 1e4, and 1e5 and
1e6 beyond the guarantee), adds a common mean offset (0 to 100 standard deviations), multiplies by a
global scale (1e-20 to 1e18), and scores them in float32 and in float64 (``jax_enable_x64``) on the
*same* float32-rounded inputs, so that only the arithmetic differs. A case is

* **within** when |f32 − f64| ≤ 1e-3 · max(|f64|, floor), the floor being the estimator's natural
  unit (the target variance for Linear MSE, 1 elsewhere: nats, or classes for H-score and GBC);
* **warned** when the float32 call raised :class:`jaxtransfer.PrecisionWarning` (it says the
  working precision cannot resolve these features);
* **wrong** otherwise: a silent error beyond 1e-3.

    python bench/bench_numerics.py --out bench/results/numerics.json
    python bench/bench_numerics.py --quick --out /tmp/numerics.json     # about a minute; in the tests

The estimators that take labels or probabilities (NCE, conditional entropy, hardness, LEEP) are
run on labels and softmax probabilities derived from the same features at the same scales.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import jaxtransfer as jt
from jaxtransfer.apps.reproduce import code_version

KEY = 0
TOLERANCE = 1e-3


@contextlib.contextmanager
def precision(x64: bool):
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.7
        from jax.experimental import enable_x64 as ctx
    with ctx(x64):
        yield


def features(rng, n, d, cond, offset, scale):
    """[n, d]: singular values log-spaced over ``cond`` (Gaussian entries when ``cond`` is None),
    unit-variance-sized, + offset, × scale."""
    if cond is None:
        f = rng.normal(size=(n, d))
    else:
        r = min(n, d)
        u, _ = np.linalg.qr(rng.normal(size=(n, r)))
        v, _ = np.linalg.qr(rng.normal(size=(d, r)))
        s = np.logspace(0, -np.log10(cond), r) * np.sqrt(n)
        f = (u * s) @ v.T
    f = f / f.std() + offset
    return (f * scale).astype(np.float32)


def targets(rng, f, classes):
    """Labels and a regression target that depend on the features (so scores are informative)."""
    g = f.astype(np.float64)
    g = (g - g.mean(0)) / (g.std(0) + 1e-300)
    z = g @ rng.normal(size=(g.shape[1], classes))
    z = z + rng.normal(size=z.shape) * z.std()
    labels = np.argmax(z, axis=1)
    labels[:classes] = np.arange(classes)  # every class present
    value = g @ rng.normal(size=g.shape[1])
    value = value / (value.std() + 1e-300) + 0.3 * rng.normal(size=len(value))
    return labels, value.astype(np.float32)


def outputs(f, classes, rng):
    """A source model's outputs: softmax probabilities of a random linear map of the (standardised)
    features, and 2-D predicted points (a linear map of the features themselves, at their scale)."""
    g = f.astype(np.float64)
    g = (g - g.mean(0)) / (g.std(0) + 1e-300)
    logits = g @ rng.normal(size=(g.shape[1], classes)) / np.sqrt(g.shape[1]) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    points = f.astype(np.float64) @ rng.normal(size=(f.shape[1], 2)) / np.sqrt(f.shape[1])
    return (p / p.sum(1, keepdims=True)).astype(np.float32), points.astype(np.float32)


def estimators(classes):
    """(name, fn(features, labels, value, (probs, points)) -> score, floor(labels, value))."""
    key = jax.random.key(KEY)
    one = lambda *_: 1.0  # noqa: E731
    var = lambda _, v: float(np.var(v.astype(np.float64)))  # noqa: E731
    return [
        ("linear_mse_l2=0", lambda f, y, v, p: jt.linear_mse(f, v, l2=0.0), lambda y, v: 1e-5 * var(y, v)),
        ("linear_mse_l2=1", lambda f, y, v, p: jt.linear_mse(f, v, l2=1.0), var),
        ("label_mse_l2=0", lambda f, y, v, p: jt.label_mse(p[1], v, l2=0.0), lambda y, v: 1e-5 * var(y, v)),
        ("logme", lambda f, y, v, p: jt.logme(f, y), one),
        ("logme_regression", lambda f, y, v, p: jt.logme(f, v, task="regression"), one),
        ("hscore", lambda f, y, v, p: jt.hscore(f, y), one),
        ("shrinkage_hscore", lambda f, y, v, p: jt.shrinkage_hscore(f, y), one),
        ("transrate", lambda f, y, v, p: jt.transrate(f, y), one),
        ("transrate_regression", lambda f, y, v, p: jt.transrate(f, v, task="regression", bins=4), one),
        ("gbc", lambda f, y, v, p: jt.gbc(f, y), one),
        ("nleep", lambda f, y, v, p: jt.nleep(f, y, key=key), one),
        ("leep", lambda f, y, v, p: jt.leep(p[0], y), one),
        ("nce", lambda f, y, v, p: jt.nce(np.argmax(p[0], 1), y), one),
        ("hardness", lambda f, y, v, p: jt.hardness(y), one),
    ]


def grid(quick: bool):
    """(shape, cond, offset, scale) combinations; cond None is plain Gaussian features (condition
    about 2 for 500×64, 6 for 200×400). Exactly equal singular values are left out: there the
    principal axes, and with them GBC's and NLEEP's diagonal models, are arbitrary in any
    precision."""
    if quick:
        shapes, conds, offsets, scales = [(300, 24)], [None, 1e4], [0.0, 100.0], [1e-20, 1.0, 1e18]
        extra = [((60, 120), 1e3, 30.0, 1.0), ((300, 24), 1e6, 0.0, 1.0)]
    else:
        shapes = [(500, 64), (200, 400)]
        conds, offsets, scales = (
            [None, 10.0, 100.0, 1e3, 1e4],
            [0.0, 10.0, 100.0],
            [1e-20, 1e-9, 1.0, 1e6, 1e18],
        )
        extra = [(s, c, 0.0, 1.0) for s in shapes for c in (1e5, 1e6)]  # beyond the guarantee: warned
    base = list(itertools.product(shapes, conds, offsets, scales))
    return base + extra


def case(fn, f, y, v, p, precision_warning) -> tuple[float, float, bool, str | None]:
    """(float32 score, float64 score, warned, exception text) on the same float32 inputs."""
    try:
        with precision(False), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = float(fn(f, y, v, p))
        warned = any(issubclass(w.category, precision_warning) for w in caught)
        with precision(True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b = float(fn(f.astype(np.float64), y, v.astype(np.float64), [q.astype(np.float64) for q in p]))
    except Exception as err:  # an error is a wrong result too (an older checkout raised some)
        return np.nan, np.nan, False, f"{type(err).__name__}: {err}"[:200]
    return a, b, warned, None


def run(quick: bool, seed: int = 0, progress: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    classes = 5
    # an older checkout (``PYTHONPATH=old/:old/kernels``, for a before/after count) has no such warning
    precision_warning = getattr(jt, "PrecisionWarning", ())
    rows = []
    cases = grid(quick)
    start = time.perf_counter()
    for i, ((n, d), cond, offset, scale) in enumerate(cases):
        f = features(rng, n, d, cond, offset, scale)
        y, v = targets(rng, f, classes)
        p = outputs(f, 8, rng)
        for name, fn, floor_of in estimators(classes):
            a, b, warned, exception = case(fn, f, y, v, p, precision_warning)
            floor = floor_of(y, v)
            error = abs(a - b)
            ok = np.isfinite(a) and error <= TOLERANCE * max(abs(b), floor)
            within = exception is None and bool(ok or a == b)
            rows.append(
                {
                    "estimator": name,
                    "n": n,
                    "d": d,
                    "cond": cond,
                    "offset": offset,
                    "scale": scale,
                    "float32": a,
                    "float64": b,
                    "error": error,
                    "floor": floor,
                    "within": within,
                    "warned": warned,
                    "wrong": not within and not warned,
                    "exception": exception,
                }
            )
        if progress:
            print(f"\r{i + 1}/{len(cases)} feature sets", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {"rows": rows, "seconds": time.perf_counter() - start}


def beyond(row: dict) -> bool:
    """The case lies beyond the guarantee (condition number above 1e4)."""
    return row["cond"] is not None and row["cond"] > 1e4


def summary(rows: list[dict]) -> dict:
    def count(sel):
        return {
            "tried": len(sel),
            "within": sum(r["within"] for r in sel),
            "warned": sum(r["warned"] for r in sel),
            "warned_and_within": sum(r["warned"] and r["within"] for r in sel),
            "wrong": sum(r["wrong"] for r in sel),
        }

    guaranteed = [r for r in rows if not beyond(r)]
    return {
        "all": count(rows),
        "guaranteed_range": count(guaranteed),
        "beyond_guarantee": count([r for r in rows if beyond(r)]),
        "by_estimator": {
            e: count([r for r in rows if r["estimator"] == e]) for e in sorted({r["estimator"] for r in rows})
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (about a minute)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.quick, args.seed)
    report = {
        "benchmark": "numerics",
        "tolerance": TOLERANCE,
        "quick": args.quick,
        "seed": args.seed,
        "code": code_version(),
        "environment": {
            "jax": jax.__version__,
            "device": jax.devices()[0].device_kind,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "seconds": result["seconds"],
        "summary": summary(result["rows"]),
        "wrong_cases": [r for r in result["rows"] if r["wrong"]],
        "rows": result["rows"],
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    s = report["summary"]
    for part in ("all", "guaranteed_range", "beyond_guarantee"):
        print(part, s[part])
    for row in report["wrong_cases"][:20]:
        print(
            "WRONG",
            {k: row[k] for k in ("estimator", "n", "d", "cond", "offset", "scale", "float32", "float64")},
        )


if __name__ == "__main__":
    main()
