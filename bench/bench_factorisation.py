"""What float32 accuracy costs: the spectrum's routes, and whole estimators, on easy and hard features.

Two kinds of features per size: *easy* (random Gaussian, condition number about 2–20, where the
Gram matrix's eigendecomposition is accurate and ``method="auto"`` keeps it) and *hard* (a
condition number of 1e3 plus a mean of 30 standard deviations, like post-ReLU backbone features,
where ``auto`` takes the SVD of the features). Timed as compiled executables after a warm-up,
every repetition ending in ``block_until_ready``; medians and quartiles. The figure to quote is
the ratio within one run (this machine is noisy).

    python bench/bench_factorisation.py --out bench/results/factorisation.json
    python bench/bench_factorisation.py --tiny --out /tmp/f.json      # seconds; part of the tests

``--estimators-only`` times only ``score_matrix`` through the public API, so the same command
can be pointed at an older checkout (``PYTHONPATH=old/:old/kernels``) for a before/after figure.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import jax
import numpy as np

import jaxtransfer as jt
from jaxtransfer.apps import time_call
from jaxtransfer.apps.reproduce import code_version


def features(rng, n, d, hard: bool) -> np.ndarray:
    if not hard:
        return rng.normal(size=(n, d)).astype(np.float32)
    r = min(n, d)
    u, _ = np.linalg.qr(rng.normal(size=(n, r)))
    v, _ = np.linalg.qr(rng.normal(size=(d, r)))
    f = (u * np.logspace(0, -3, r)) @ v.T
    return (f / f.std() + 30.0).astype(np.float32)


def routes(sizes, repeats, rng) -> list[dict]:
    import jaxtransfer_kernels as jk

    rows = []
    for n, d in sizes:
        for hard in (False, True):
            f = jax.device_put(features(rng, n, d, hard))
            times = {}
            for method in ("gram", "svd", "auto"):
                exe = jax.jit(lambda x, m=method: jk.spectrum(x, method=m)).lower(f).compile()
                times[method] = time_call(lambda exe=exe, f=f: exe(f), repeats)
            took_svd = bool(jk.spectrum(f).svd)
            rows.append(
                {
                    "case": "spectrum",
                    "n": n,
                    "d": d,
                    "features": "hard" if hard else "easy",
                    "auto_took": "svd" if took_svd else "gram",
                    **{f"{m}_median_s": t["median_s"] for m, t in times.items()},
                    "svd_over_gram": times["svd"]["median_s"] / times["gram"]["median_s"],
                    "auto_over_gram": times["auto"]["median_s"] / times["gram"]["median_s"],
                }
            )
            print(rows[-1])
    return rows


def estimators(sizes, sources, targets, repeats, rng) -> list[dict]:
    rows = []
    for n, d in sizes:
        for hard in (False, True):
            src = np.stack([features(rng, n, d, hard) for _ in range(sources)])
            labels = rng.integers(0, 10, size=(targets, n))
            values = rng.normal(size=(targets, n)).astype(np.float32)
            for name, tgt, opts in [
                ("linear_mse", values, {"l2": 0.0}),
                ("logme", labels, {}),
                ("hscore", labels, {}),
                ("transrate", labels, {}),
                ("gbc", labels, {}),
            ]:
                run = lambda name=name, src=src, tgt=tgt, opts=opts: jt.score_matrix(name, src, tgt, **opts)  # noqa: E731
                t = time_call(run, repeats)
                pairs = sources * targets
                rows.append(
                    {
                        "case": "score_matrix",
                        "estimator": name,
                        "n": n,
                        "d": d,
                        "features": "hard" if hard else "easy",
                        "S": sources,
                        "T": targets,
                        "median_s": t["median_s"],
                        "ms_per_pair": 1e3 * t["median_s"] / pairs,
                    }
                )
                print(rows[-1])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--estimators-only", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    if args.tiny:
        sizes, repeats, sources, targets = [(60, 8), (8, 20)], 2, 2, 2
    else:
        sizes, repeats, sources, targets = [(4000, 256), (1000, 1280), (500, 64)], 5, 4, 8
    rows = [] if args.estimators_only else routes(sizes, repeats, rng)
    rows += estimators(sizes, sources, targets, max(2, repeats // 2), rng)
    report = {
        "benchmark": "factorisation",
        "config": {"tiny": args.tiny, "estimators_only": args.estimators_only, "seed": 0},
        "code": code_version(),
        "environment": {
            "jax": jax.__version__,
            "device": jax.devices()[0].device_kind,
            "platform": platform.platform(),
            "dtype": "float32",
        },
        "results": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
