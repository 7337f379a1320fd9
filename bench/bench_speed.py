"""Speed of the kernels and of ``score_matrix`` against per-pair baselines, in one run.

Every case times jaxtransfer and its baseline in the same process, so the figure
to quote is the ratio. jaxtransfer is timed as a compiled executable
(``jax.jit(...).lower(...).compile()``, compile time reported separately), after
a warm-up, each repetition ending in ``jax.block_until_ready``
(``jaxtransfer.apps.time_call``); medians, quartiles and extremes are reported.
The eager call (with its input validation) is timed too.

    python bench/bench_speed.py --out jaxtransfer-output/bench/speed.json   # make bench (git-ignored)
    python bench/bench_speed.py --out bench/results/speed.json    # make bench-results: the committed figures
    python bench/bench_speed.py --tiny --out /tmp/smoke.json    # seconds; part of the tests

Cases (the foundation issue's targets):
  linear_mse_ridge     S=8 sources (n=4000, d=256) × T=32 1-D targets, λ=1, vs scikit-learn Ridge per pair
  linear_mse_8_l2      the same with 8 λ values in one call, vs Ridge per pair and per λ
  nce_binary           64 × 64 binary attribute labelings, n=20000, vs NumPy bincount per pair
  nce_10class          64 × 64 10-class labelings, n=20000, vs the same loop
  nce_1000x100         16 sources of 1000-class argmax labels × 4 100-class targets, n=50000
  leep                 8 sources of 100-class probabilities × 16 10-class targets, n=5000, vs NumPy per pair
  histogram_methods    the joint-count kernel for the 10-class case by one-hot product and by scatter-add
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxtransfer_kernels as jk
import numpy as np

import jaxtransfer as jt
from jaxtransfer.apps import compile_timed, time_call
from jaxtransfer.apps.reproduce import code_version


def _case(name, sizes, jax_fn, args, baseline, repeats, base_repeats, eager=None, check=None):
    exe, compile_s = compile_timed(jax_fn, *args)
    ours = time_call(lambda: exe(*args), repeats)
    base = time_call(baseline, base_repeats, warmup=0 if base_repeats < 3 else 1)
    row = {
        "case": name,
        "sizes": sizes,
        "compile_s": compile_s,
        "jaxtransfer": ours,
        "baseline": base,
        "speedup": base["median_s"] / ours["median_s"],
    }
    if eager is not None:
        row["eager"] = time_call(eager, repeats)
        row["speedup_eager"] = base["median_s"] / row["eager"]["median_s"]
    if check is not None:
        row["max_abs_diff_vs_baseline"] = float(check(np.asarray(exe(*args))))
    return row


def _nce_loop(z, y, cz, cy):
    n = z.shape[1]
    out = np.empty((z.shape[0], y.shape[0]))
    for s in range(z.shape[0]):
        for t in range(y.shape[0]):
            c = np.bincount(z[s] * cy + y[t], minlength=cz * cy).reshape(cz, cy)
            rows = np.broadcast_to(c.sum(axis=1, keepdims=True), c.shape)
            nz = c > 0
            out[s, t] = np.sum(c[nz] * np.log(c[nz] / rows[nz])) / n  # = -H(Y|Z)
    return out


def bench_nce(name, s, t, n, cz, cy, repeats, base_repeats, rng):
    z = rng.integers(0, cz, (s, n)).astype(np.int64)
    y = rng.integers(0, cy, (t, n)).astype(np.int64)
    zj, yj = jnp.asarray(z, jnp.int32), jnp.asarray(y, jnp.int32)

    def fn(a, b):
        return jt.score_matrix(jt.nce, a, b, num_source_classes=cz, num_target_classes=cy)

    ref = {}

    def baseline():
        ref["v"] = _nce_loop(z, y, cz, cy)
        return ref["v"]

    row = _case(
        name,
        {"S": s, "T": t, "n": n, "Cz": cz, "Cy": cy},
        fn,
        (zj, yj),
        baseline,
        repeats,
        base_repeats,
        eager=lambda: fn(z, y),
        check=lambda out: np.abs(out - ref["v"]).max(),
    )
    row["method"] = jk.choose_histogram_method(cz, cy)
    return row


def _ridge_objective_sklearn(f, y, lam):
    from sklearn.linear_model import Ridge

    n = f.shape[0]
    model = Ridge(alpha=n * lam, solver="cholesky").fit(f, y)  # the fastest exact solver here
    resid = y - model.predict(f)
    return -(np.mean(resid**2) + lam * np.sum(model.coef_**2))


def bench_linear_mse(name, s, t, n, d, l2s, repeats, base_repeats, rng):
    # well-conditioned features, so that the baseline takes scikit-learn's fast Cholesky solver
    f = rng.standard_normal((s, n, d)).astype(np.float32)
    w = rng.standard_normal((s, d, t)).astype(np.float32) / np.sqrt(d)
    y = (np.einsum("snd,sdt->tn", f, w[:, :, :]) / s + rng.standard_normal((t, n))).astype(np.float32)
    fj, yj = jnp.asarray(f), jnp.asarray(y)
    l2 = l2s[0] if len(l2s) == 1 else jnp.asarray(l2s, jnp.float32)

    def fn(a, b):
        return jt.score_matrix(jt.linear_mse, a, b, l2=l2)

    ref = {}

    def baseline():
        out = np.empty((s, t, len(l2s)))
        for i in range(s):
            for j in range(t):
                for k, lam in enumerate(l2s):
                    out[i, j, k] = _ridge_objective_sklearn(f[i], y[j], lam)
        ref["v"] = out if len(l2s) > 1 else out[..., 0]
        return ref["v"]

    def check(out):
        return np.max(np.abs(out - ref["v"]) / np.maximum(np.abs(ref["v"]), 1e-12))

    row = _case(
        name,
        {"S": s, "T": t, "n": n, "d": d, "l2": list(l2s)},
        fn,
        (fj, yj),
        baseline,
        repeats,
        base_repeats,
        eager=lambda: fn(f, y),
        check=check,
    )
    row["max_abs_diff_vs_baseline_is"] = "relative"
    return row


def bench_leep(name, s, t, n, cz, cy, repeats, base_repeats, rng):
    logits = rng.standard_normal((s, n, cz)).astype(np.float32) * 3
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    y = rng.integers(0, cy, (t, n))
    pj, yj = jnp.asarray(probs), jnp.asarray(y, jnp.int32)

    def fn(a, b):
        return jt.score_matrix(jt.leep, a, b, num_target_classes=cy)

    ref = {}

    def baseline():
        out = np.empty((s, t))
        for i in range(s):
            p = probs[i].astype(np.float64)
            for j in range(t):
                onehot = np.eye(cy)[y[j]]
                joint = p.T @ onehot / n
                cond = joint / joint.sum(axis=1, keepdims=True)
                out[i, j] = np.mean(np.log(np.sum(p * cond[:, y[j]].T, axis=1)))
        ref["v"] = out
        return out

    return _case(
        name,
        {"S": s, "T": t, "n": n, "Cz": cz, "Cy": cy},
        fn,
        (pj, yj),
        baseline,
        repeats,
        base_repeats,
        eager=lambda: fn(probs, y),
        check=lambda out: np.abs(out - ref["v"]).max(),
    )


def bench_histogram_methods(name, s, t, n, cz, cy, repeats, rng):
    z = jnp.asarray(rng.integers(0, cz, (s, n)), jnp.int32)
    y = jnp.asarray(rng.integers(0, cy, (t, n)), jnp.int32)
    rows = {}
    for method in ("onehot", "scatter"):
        fn = lambda a, b, m=method: jk.joint_histograms(a, b, num_z=cz, num_y=cy, method=m)  # noqa: E731
        exe, compile_s = compile_timed(fn, z, y)
        rows[method] = {"compile_s": compile_s, **time_call(lambda e=exe: e(z, y), repeats)}
    return {
        "case": name,
        "sizes": {"S": s, "T": t, "n": n, "Cz": cz, "Cy": cy},
        "methods": rows,
        "scatter_over_onehot": rows["scatter"]["median_s"] / rows["onehot"]["median_s"],
        "auto_picks": jk.choose_histogram_method(cz, cy),
    }


def run(tiny: bool, repeats: int, only: list[str] | None = None) -> dict:
    rng = np.random.default_rng(0)
    r, br = (1, 1) if tiny else (repeats, 3)
    k = 16 if tiny else 1  # shrink factor for the smoke run
    cases = [
        lambda: bench_linear_mse(
            "linear_mse_ridge", 8 // (k // 4 or 1), 32 // k, 4000 // k, 256 // k, [1.0], r, br, rng
        ),
        lambda: bench_linear_mse(
            "linear_mse_8_l2",
            8 // (k // 4 or 1),
            32 // k,
            4000 // k,
            256 // k,
            [0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0],
            r,
            1,
            rng,
        ),
        lambda: bench_nce("nce_binary", 64 // k, 64 // k, 20000 // k, 2, 2, r, br, rng),
        lambda: bench_nce("nce_10class", 64 // k, 64 // k, 20000 // k, 10, 10, r, br, rng),
        lambda: bench_nce(
            "nce_1000x100", 16 // (k // 4 or 1), 4, 50000 // k, 1000 // k, 100 // k, r, br, rng
        ),
        lambda: bench_leep("leep", 8 // (k // 4 or 1), 16 // k, 5000 // k, 100 // k, 10, r, br, rng),
        lambda: bench_histogram_methods("histogram_methods", 64 // k, 64 // k, 20000 // k, 10, 10, r, rng),
    ]
    names = [
        "linear_mse_ridge",
        "linear_mse_8_l2",
        "nce_binary",
        "nce_10class",
        "nce_1000x100",
        "leep",
        "histogram_methods",
    ]
    results = [case() for name, case in zip(names, cases, strict=True) if not only or name in only]
    return report(results, tiny, {"repeats": r, "only": only, "seed": 0})


def report(results: list[dict], tiny: bool, config: dict | None = None) -> dict:
    """The JSON report: the results with the settings that ran them (``config``: repeats, cases, seed),
    the code version (jaxtransfer version, git commit) and the device, versions and dtype."""
    return {
        "config": config or {},
        "code": code_version(),
        "device": str(jax.devices()[0]),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "dtype": str(jnp.zeros(()).dtype),
        "tiny": tiny,
        "results": results,
    }


def write_report(report: dict, out: str | None) -> None:
    """Write the report as JSON to ``out`` (when given), creating its folder."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))


def _summary(report: dict) -> str:
    lines = [f"{report['device']} jax {report['jax']} ({report['dtype']})"]
    for row in report["results"]:
        if "speedup" in row:
            lines.append(
                f"{row['case']:18s} jaxtransfer {row['jaxtransfer']['median_s'] * 1e3:9.2f} ms"
                f"  baseline {row['baseline']['median_s'] * 1e3:9.2f} ms  speedup {row['speedup']:7.1f}x"
                f"  (eager {row['speedup_eager']:6.1f}x, compile {row['compile_s']:.2f} s)"
            )
        else:
            m = row["methods"]
            lines.append(
                f"{row['case']:18s} onehot {m['onehot']['median_s'] * 1e3:.2f} ms  scatter "
                f"{m['scatter']['median_s'] * 1e3:.2f} ms  (auto picks {row['auto_picks']})"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument("--only", nargs="+", help="run only these cases")
    args = parser.parse_args(argv)
    result = run(args.tiny, args.repeats, args.only)
    write_report(result, args.out)
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
