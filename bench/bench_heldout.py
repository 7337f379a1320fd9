"""Cost per pair of the held-out Linear MSE against ``linear_mse`` and ``logme``, in one run.

Every estimator runs through ``score_matrix`` on the same S sources × T targets (one factorisation
per source, the targets batched), compiled first (compile time separate), warmed up, and then timed
in interleaved rounds (one call of each per round, each ending in ``jax.block_until_ready``) so that
load on a shared machine falls on all alike; the figure to quote is the ratio of medians per pair.
``linear_mse`` runs at its default λ = 1 (a Cholesky factor, the cheapest path) and with 25
penalties (the eigendecomposition, the same factorisation the held-out estimate needs). The
baseline is a per-pair NumPy loop (float64) of the same leave-one-out curve: one SVD per pair.

    python bench/bench_heldout.py --out jaxtransfer-output/bench/heldout.json
    python bench/bench_heldout.py --tiny --out /tmp/heldout.json    # seconds; a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import report, write_report

import jaxtransfer as jt
from jaxtransfer.apps import compile_timed
from jaxtransfer.estimators._heldout import L2_GRID


def numpy_loo_curve(f, y, grid=L2_GRID):
    """The leave-one-out curve of one pair in float64: SVD of the centred features, r/(1 − H_ii)."""
    f, y = np.asarray(f, np.float64), np.asarray(y, np.float64)
    n = f.shape[0]
    fc, yc = f - f.mean(axis=0), y - y.mean(axis=0)
    u, s, _ = np.linalg.svd(fc, full_matrices=False)
    keep = s > s[0] * 1e-12
    u, s2 = u[:, keep], s[keep] ** 2
    z = u.T @ yc
    out = []
    for rho in grid:
        g = s2 / (s2 + rho * np.sum(s**2))
        r = yc - u @ (g[:, None] * z)
        lev = 1 - 1 / n - (u * u) @ g
        out.append(np.sum((r / lev[:, None]) ** 2) / n)
    return np.array(out)


def make_data(s, t, n, d, k, rng):
    """Sources: noisy views of a shared latent, uncentred; targets: projections of it plus noise,
    or one-hot classes of its argmax (``k`` classes) when ``onehot``."""
    latent = rng.standard_normal((n, 32))
    quality = np.linspace(0.2, 3.0, s)
    mix = rng.standard_normal((s, 32, d)) / np.sqrt(32)
    feats = np.einsum("nk,skd->snd", latent, mix) * quality[:, None, None]
    feats += rng.standard_normal((s, n, d)) + 0.3
    proj = np.einsum("nk,tkc->tnc", latent, rng.standard_normal((t, 32, k))) + rng.standard_normal((t, n, k))
    return feats.astype(np.float32), proj.astype(np.float32)


def _interleaved(fns: dict, repeats: int) -> dict:
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, ts in times.items():
        q = np.percentile(ts, [25, 50, 75])
        out[name] = {"median_s": float(q[1]), "q25_s": float(q[0]), "q75_s": float(q[2]), "repeats": repeats}
    return out


def bench_case(name, s, t, n, d, k, classification, repeats, rng):
    f, y = make_data(s, t, n, d, k, rng)
    if classification:  # one-hot classes; logme takes the labels
        labels = np.argmax(y, axis=-1)
        y = np.eye(k, dtype=np.float32)[labels]
    fj, yj = jnp.asarray(f), jnp.asarray(y)
    lj = jnp.asarray(labels, jnp.int32) if classification else None
    calls = {
        "heldout_loo": (lambda a, b: jt.score_matrix("heldout_linear_mse", a, b), (fj, yj)),
        "heldout_gcv": (lambda a, b: jt.score_matrix("heldout_linear_mse", a, b, method="gcv"), (fj, yj)),
        "linear_mse_l2_1": (lambda a, b: jt.score_matrix("linear_mse", a, b), (fj, yj)),
        "linear_mse_25_l2": (
            lambda a, b: jt.score_matrix("linear_mse", a, b, l2=jnp.asarray(L2_GRID)),
            (fj, yj),
        ),
    }
    if classification:
        calls["logme"] = (lambda a, b: jt.score_matrix("logme", a, b, num_target_classes=k), (fj, lj))
    else:
        calls["logme"] = (lambda a, b: jt.score_matrix("logme", a, b, task="regression"), (fj, yj))
    compiled, compile_s = {}, {}
    for key, (fn, args) in calls.items():
        exe, compile_s[key] = compile_timed(fn, *args)
        compiled[key] = lambda exe=exe, args=args: exe(*args)
    timing = _interleaved(compiled, repeats)
    pairs = s * t
    per_pair = {key: row["median_s"] / pairs for key, row in timing.items()}
    # the per-pair NumPy loop, on a few pairs (it is slow), checked against ours
    few = [(i, j) for i in range(min(s, 2)) for j in range(min(t, 2))]
    start = time.perf_counter()
    ref = {(i, j): numpy_loo_curve(f[i], y[j]) for i, j in few}
    base_per_pair = (time.perf_counter() - start) / len(few)
    ours = np.asarray(compiled["heldout_loo"]())
    diff = max(abs(ours[i, j] + ref[i, j].min()) / ref[i, j].min() for i, j in few)
    return {
        "case": name,
        "sizes": {"S": s, "T": t, "n": n, "d": d, "k": k, "classification": classification},
        "compile_s": compile_s,
        "timing": timing,
        "per_pair_s": per_pair,
        "ratio_heldout_loo_to_linear_mse_l2_1": per_pair["heldout_loo"] / per_pair["linear_mse_l2_1"],
        "ratio_heldout_loo_to_linear_mse_25_l2": per_pair["heldout_loo"] / per_pair["linear_mse_25_l2"],
        "ratio_heldout_gcv_to_linear_mse_l2_1": per_pair["heldout_gcv"] / per_pair["linear_mse_l2_1"],
        "ratio_heldout_loo_to_logme": per_pair["heldout_loo"] / per_pair["logme"],
        "numpy_loop_per_pair_s": base_per_pair,
        "speedup_vs_numpy_loop": base_per_pair / per_pair["heldout_loo"],
        "max_rel_diff_vs_numpy_float64": float(diff),
    }


CASES = {  # S, T, n, d, k, classification
    "regression_n2000_d256": (8, 8, 2000, 256, 1, False),
    "classes10_n2000_d256": (8, 8, 2000, 256, 10, True),
    "regression_n500_d1024": (8, 8, 500, 1024, 1, False),
}
TINY = {"tiny_classes_n_lt_d": (2, 2, 40, 50, 3, True)}


def run(tiny: bool, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    cases, r = (TINY, 1) if tiny else (CASES, repeats)
    results = [bench_case(name, *sizes, r, rng) for name, sizes in cases.items()]
    config = {"repeats": r, "seed": 0, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    return report(results, tiny, config)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    result = run(args.tiny, args.repeats)
    write_report(result, args.out)
    print(f"{result['device']} jax {result['jax']} ({result['dtype']})")
    for row in result["results"]:
        pp = row["per_pair_s"]
        print(
            f"{row['case']:24s} per pair (ms): "
            + "  ".join(f"{k} {v * 1e3:.3f}" for k, v in pp.items())
            + f"\n{'':24s} heldout_loo / linear_mse(λ=1) {row['ratio_heldout_loo_to_linear_mse_l2_1']:.2f}x"
            f"  / linear_mse(25 λ) {row['ratio_heldout_loo_to_linear_mse_25_l2']:.2f}x"
            f"  / logme {row['ratio_heldout_loo_to_logme']:.2f}x;"
            f"  gcv / linear_mse(λ=1) {row['ratio_heldout_gcv_to_linear_mse_l2_1']:.2f}x;"
            f"  vs NumPy loop {row['speedup_vs_numpy_loop']:.1f}x"
            f" (rel diff {row['max_rel_diff_vs_numpy_float64']:.1e})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
