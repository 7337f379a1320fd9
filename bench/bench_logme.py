"""Speed of ``score_matrix(logme)`` against a per-pair NumPy LogME loop, in one run.

jaxtransfer factorises each source once (one eigendecomposition of its d×d Gram
matrix) and solves every target column from it; the baseline is an efficient
NumPy LogME that does what a per-pair loop does: one SVD per (source, target)
pair, then the same maximisation per column (a grid over log(α/β), then
Newton on MacKay's stationarity condition), in float64. Timing follows
``bench_speed.py`` (compiled executable, compile time separate, warm-up,
``block_until_ready``, medians and quartiles, the eager call too).

    python bench/bench_logme.py --out bench/results/logme.json
    python bench/bench_logme.py --tiny --out /tmp/logme.json    # seconds; part of the tests

Case (issue 3): S=16 sources (n=2000, d=256) × T=20 binary classification targets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import _case, _summary, report, write_report

import jaxtransfer as jt
from jaxtransfer.apps import compile_timed, time_call
from jaxtransfer.estimators._logme import logme

_GRID = 128


def _numpy_column(e, z2, yperp2, n, tol, max_iter=100):
    """max_{α,β} log N(y; 0, β⁻¹I + α⁻¹FFᵀ)/n for one column from σ² (``e``) and z² = (Uᵀy)²."""
    eps = np.finfo(np.float64).eps
    lo_u, hi_u = np.log(eps * eps * e.min()), np.log(e.max() / eps)

    def terms(u):
        t = np.exp(u)
        g, h = e / (t + e), t / (t + e)
        s0 = yperp2 + z2 @ h
        return t, g, h, s0, np.sum(np.log1p(e / t))

    us = np.linspace(lo_u, hi_u, _GRID)
    t = np.exp(us)[:, None]
    values = -0.5 * n * np.log(yperp2 + (t / (t + e)) @ z2) - 0.5 * np.log1p(e / t).sum(axis=1)
    best = int(np.argmax(values))
    step = us[1] - us[0]

    def slope(u):
        _, g, h, s0, _ = terms(u)
        hg = h * g
        r1 = (z2 @ hg) / s0
        d1 = 0.5 * g.sum() - 0.5 * n * r1
        d2 = -0.5 * n * ((z2 @ (hg * (g - h))) / s0 - r1 * r1) - 0.5 * hg.sum()
        return d1, d2, n / s0

    u = us[best]
    d1, d2, beta = slope(u)
    lo, hi = (u, min(u + step, hi_u)) if d1 > 0 else (max(u - step, lo_u), u)
    if not ((best == 0 and d1 <= 0) or (best == _GRID - 1 and d1 >= 0)):
        alpha = np.exp(u) * beta
        for _ in range(max_iter):
            newton = u - d1 / d2 if d2 < 0 else np.inf
            u = newton if lo < newton < hi else 0.5 * (lo + hi)
            d1, d2, new_beta = slope(u)
            lo, hi = (u, hi) if d1 > 0 else (lo, u)
            new_alpha = np.exp(u) * new_beta
            done = abs(new_alpha - alpha) <= tol * alpha and abs(new_beta - beta) <= tol * beta
            alpha, beta = new_alpha, new_beta
            if done or d1 == 0:
                break
    _, _, _, s0, log_det = terms(u)
    # with β at its optimum n/S for this t the evidence is (n/2)(log(n/S) − 1 − log 2π) − log_det/2
    return (0.5 * n * (np.log(n / s0) - 1 - np.log(2 * np.pi)) - 0.5 * log_det) / n


def numpy_logme(f, labels, num_classes):
    """LogME of one pair: one SVD of the features, then each one-hot column (float64)."""
    f = np.asarray(f, np.float64)
    n = f.shape[0]
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    e = s * s
    keep = e > np.finfo(np.float64).eps * max(f.shape) * e.max()
    u, e = u[:, keep], e[keep]
    y = np.eye(num_classes)[labels]
    z = u.T @ y
    resid = y - u @ z  # directly, not ‖y‖² − ‖z‖²
    yperp2 = np.sum(resid * resid, axis=0)
    tol = np.sqrt(np.finfo(np.float64).eps)
    cols = [j for j in range(num_classes) if np.any(y[:, j])]
    return np.mean([_numpy_column(e, z[:, j] ** 2, yperp2[j], n, tol) for j in cols])


def make_data(s, t, n, d, rng):
    """Sources: noisy views of a shared latent; binary targets: thresholded projections of it."""
    latent = rng.standard_normal((n, 32))
    quality = np.linspace(0.2, 3.0, s)  # sources differ in how much of the latent they keep
    mix = rng.standard_normal((s, 32, d)) / np.sqrt(32)
    feats = np.einsum("nk,skd->snd", latent, mix) * quality[:, None, None]
    feats += rng.standard_normal((s, n, d)) + 0.3  # uncentred, as real activations are
    proj = latent @ rng.standard_normal((32, t)) + 0.5 * rng.standard_normal((n, t))
    labels = (proj > np.median(proj, axis=0)).astype(np.int64).T  # [T, n], balanced
    return feats.astype(np.float32), labels


def bench_logme(name, s, t, n, d, repeats, base_repeats, rng):
    f, y = make_data(s, t, n, d, rng)
    fj, yj = jnp.asarray(f), jnp.asarray(y, jnp.int32)

    def fn(a, b, batch_size=None):
        return jt.score_matrix(logme, a, b, num_target_classes=2, batch_size=batch_size)

    ref = {}

    def baseline():
        ref["v"] = np.array([[numpy_logme(f[i], y[j], 2) for j in range(t)] for i in range(s)])
        return ref["v"]

    def check(out):
        return np.max(np.abs(out - ref["v"]) / np.maximum(np.abs(ref["v"]), 1e-12))

    row = _case(
        name,
        {"S": s, "T": t, "n": n, "d": d, "classes": 2},
        fn,
        (fj, yj),
        baseline,
        repeats,
        base_repeats,
        eager=lambda: fn(f, y),
        check=check,
    )
    row["max_abs_diff_vs_baseline_is"] = "relative (float32 jaxtransfer vs float64 NumPy)"
    # the default steps through the sources one at a time (lax.map); all S at once, for comparison
    exe, compile_s = compile_timed(lambda a, b: fn(a, b, batch_size=s), fj, yj)
    row["all_sources_at_once"] = {"compile_s": compile_s, **time_call(lambda: exe(fj, yj), repeats)}
    row["all_sources_at_once"]["speedup"] = (
        row["baseline"]["median_s"] / row["all_sources_at_once"]["median_s"]
    )
    return row


def run(tiny: bool, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    if tiny:
        sizes, r, br = (2, 3, 200, 16), 1, 1
    else:
        sizes, r, br = (16, 20, 2000, 256), repeats, 3
    results = [bench_logme("logme_binary", *sizes, r, br, rng)]
    return report(results, tiny, {"repeats": r, "seed": 0})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    result = run(args.tiny, args.repeats)
    write_report(result, args.out)
    print(_summary(result))
    for row in result["results"]:
        once = row["all_sources_at_once"]
        print(
            f"{'':18s} all {row['sizes']['S']} sources at once {once['median_s'] * 1e3:9.2f} ms"
            f"  speedup {once['speedup']:7.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
