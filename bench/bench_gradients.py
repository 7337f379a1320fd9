"""Every estimator inside JAX training code: jit, vmap, reverse and forward gradients, and their cost.

For each registered estimator, at one modest size (n = 500 samples, d = 64 features, 5 target
classes, 10 source classes for probabilities and labels, float32), on inputs built with a fixed
seed:

* the forward call is jitted with the targets as a traced argument and the class counts and other
  shape options as closed-over Python ints (the estimator's static options), compiled separately
  (``jax.jit(f).lower(...).compile()``) and timed;
* ``jax.vmap`` over 3 stacked sources (stacked targets for ``hardness``) is run jitted and compared
  with the looped calls;
* the options documented as array-valued (``l2``, ``eps``, ``tol``, ``key``...) are passed once as
  jit arguments, to check that they may be traced;
* ``jax.jit(jax.grad(f))`` with respect to the source input (features, probabilities or
  predictions) and ``jax.jvp`` with one tangent are compiled and timed; each records whether it
  works (or the exception), whether the result is finite, and ⟨∇f, v⟩ against the JVP;
* in float64 at a small size (n = 60, d = 6), ⟨∇f, v⟩ against a central finite difference along a
  random direction v, and, for feature estimators, the score at 2001 points along that line
  (within 5% of ‖x‖) to count jumps, where a discrete choice inside the estimator (NLEEP's
  k-means++ seeds and assignments) changes and no gradient can see it.

Timing follows ``bench_speed.py`` (compile time separate, a warm-up, each repetition ending in
``jax.block_until_ready``, medians and quartiles), with the forward call, the gradient and the JVP
run in turn in every round, so that load on a shared machine falls on all three alike. The figure
to quote is the ratio of the gradient's median to the forward call's median. Estimators whose
source input is integer labels (``nce``, ``conditional_entropy``) or that have none
(``hardness``) have no gradient in it; ``soft_nce`` is NCE's differentiable form.

    python bench/bench_gradients.py    # writes jaxtransfer-output/bench/gradients.json (git-ignored)
    python bench/bench_gradients.py --tiny --out /tmp/gradients.json    # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
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

SIZES = {"n": 500, "d": 64, "classes": 5, "source_classes": 10, "outputs": 2}
TINY = {"n": 60, "d": 8, "classes": 3, "source_classes": 4, "outputs": 2}
FD_SIZES = {"n": 60, "d": 6, "classes": 3, "source_classes": 4, "outputs": 2}
FD_STEP = 1e-6  # central-difference step in float64
STACK = 3  # sources stacked for the vmap check

# options documented as array-valued, passed as jit arguments once to check that they may be traced
TRACED = {
    "gbc": {"explained_variance": 0.9},
    "hscore": {"feature_mask": "features_mask"},
    "shrinkage_hscore": {"feature_mask": "features_mask"},
    "label_mse": {"l2": 1.0},
    "linear_mse": {"l2": 1.0},
    "logme": {"tol": 1e-4},
    "nleep": {"key": "key", "explained_variance": 0.8},
    "transrate": {"eps": 1.0},
}
# static options that the eager check does not list as shape-giving but that must be Python ints
EXTRA_STATIC = {"logme": ("max_iter",)}
NO_GRADIENT = {"labels": "— integer labels", "none": "— no source input (labels only)"}


@contextlib.contextmanager
def _x64():
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.7
        from jax.experimental import enable_x64 as ctx
    with ctx(True):
        yield


def _data(sizes: dict, dtype, seed: int = 0) -> dict:
    """Inputs of every kind, informative of the labels: features, probabilities, predictions,
    source labels, target labels and target values."""
    rng = np.random.default_rng(seed)
    n, d, c, cz, k = (sizes[key] for key in ("n", "d", "classes", "source_classes", "outputs"))
    y = rng.permutation(np.arange(n) % c)
    f = rng.standard_normal((n, d)) + 1.5 * np.eye(c, d)[y]
    logits = 2.0 * rng.standard_normal((n, cz)) + 2.0 * np.eye(c, cz)[y]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    values = f @ rng.standard_normal((d, k)) / np.sqrt(d) + 0.5 * rng.standard_normal((n, k))
    return {
        "features": jnp.asarray(f, dtype),
        "probabilities": jnp.asarray(p, dtype),
        "predictions": jnp.asarray(values + 0.3 * rng.standard_normal((n, k)), dtype),
        "labels": jnp.asarray(np.argmax(logits, axis=1), jnp.int32),
        "target_labels": jnp.asarray(y, jnp.int32),
        "target_values": jnp.asarray(values, dtype),
        "features_mask": jnp.ones((d,), bool),
        "key": jax.random.key(0),
        "stack_seed": seed + 1,
    }


def _problem(name: str, sizes: dict, data: dict):
    """(fwd(source, target), source, target, static options) for one estimator; source None for
    ``hardness``, whose only input is the target."""
    est = jt.get_estimator(name)
    info = est.info
    target = data["target_labels"] if info.target == "labels" else data["target_values"]
    static = {}
    if "num_target_classes" in info.options and info.target == "labels":
        static["num_target_classes"] = sizes["classes"]
    if "num_source_classes" in info.options:
        static["num_source_classes"] = sizes["source_classes"]
    extra = {"key": data["key"]} if "key" in info.options else {}
    if info.source == "none":

        def fwd(t):
            return est(t, **static)

        return fwd, None, target, static
    source = data[info.source]

    def fwd(x, t):
        return est(x, t, **static, **extra)

    return fwd, source, target, static


def _error(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:160]}" if str(err) else type(err).__name__


def _stacked(source, seed: int):
    """``STACK`` sources of the same kind: the source and perturbed (or re-drawn) copies."""
    rng = np.random.default_rng(seed)
    if jnp.issubdtype(source.dtype, jnp.integer):
        hi = int(source.max()) + 1
        others = [rng.integers(0, hi, source.shape) for _ in range(STACK - 1)]
        return jnp.stack([source, *[jnp.asarray(o, source.dtype) for o in others]])
    if source.ndim == 2 and jnp.allclose(source.sum(axis=1), 1):  # probabilities: stay on the simplex
        others = [
            0.7 * source + 0.3 * jnp.asarray(rng.dirichlet(np.ones(source.shape[1]), source.shape[0]))
            for _ in range(STACK - 1)
        ]
        return jnp.stack([source, *[o.astype(source.dtype) for o in others]])
    noise = [jnp.asarray(rng.standard_normal(source.shape), source.dtype) for _ in range(STACK - 1)]
    return jnp.stack([source, *[source + 0.5 * e for e in noise]])


def _vmap_check(fwd, source, target, seed: int) -> dict:
    try:
        if source is None:
            batch = _stacked(target, seed)
            got = jax.jit(jax.vmap(fwd))(batch)
            want = jnp.stack([jax.jit(fwd)(b) for b in batch])
        else:
            batch = _stacked(source, seed)
            got = jax.jit(jax.vmap(fwd, in_axes=(0, None)))(batch, target)
            want = jnp.stack([jax.jit(fwd)(b, target) for b in batch])
        diff = float(jnp.max(jnp.abs(got - want) / jnp.maximum(jnp.abs(want), 1)))
        return {"works": True, "max_rel_diff_vs_loop": diff}
    except Exception as err:  # report, do not stop the run
        return {"works": False, "error": _error(err)}


def _traced_options_check(name: str, source, target, static: dict, data: dict) -> dict:
    """Pass each array-valued option as a jit argument; compare with the eager call."""
    est = jt.get_estimator(name)
    out = {}
    for opt, value in TRACED.get(name, {}).items():
        value = data[value] if isinstance(value, str) else value
        rest = {"key": data["key"]} if "key" in est.info.options and opt != "key" else {}

        def call(v, opt=opt, rest=rest):
            return est(source, target, **static, **rest, **{opt: v})

        try:
            got, want = jax.jit(call)(value), call(value)
            out[opt] = {"works": bool(jnp.allclose(got, want, rtol=1e-5, atol=1e-6))}
        except Exception as err:
            out[opt] = {"works": False, "error": _error(err)}
    return out


def _timeit_interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """``jaxtransfer.apps.time_call`` for several calls at once, one of each per round, so that
    load on a shared machine falls on all of them alike and their ratio stays meaningful."""
    times = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            if i >= warmup:
                times[k].append(time.perf_counter() - start)
    out = {}
    for k, ts in times.items():
        q = np.percentile(ts, [25, 50, 75])
        out[k] = {"median_s": float(q[1]), "q25_s": float(q[0]), "q75_s": float(q[2]), "repeats": repeats}
    return out


def _timed_cases(fwd, args, repeats: int, seed: int, derivatives: bool) -> dict:
    """The jitted forward call and, with ``derivatives``, reverse mode (jit(grad) in the source) and
    forward mode (jvp, one tangent): each compiled separately, whether it works (or the exception),
    whether it is finite, then all timed together."""
    out, calls = {}, {}
    try:
        exe, compile_s = compile_timed(fwd, *args)
        out["jit"] = {"works": True, "value": float(exe(*args)), "compile_s": compile_s}
        calls["jit"] = lambda: exe(*args)
    except Exception as err:  # report, do not stop the run
        out["jit"] = {"works": False, "error": _error(err)}
    grad = None
    if derivatives:
        source, target = args
        v = jnp.asarray(np.random.default_rng(seed).standard_normal(source.shape), source.dtype)
        try:
            g_exe, compile_s = compile_timed(jax.grad(fwd), source, target)
            grad = g_exe(source, target)
            out["reverse"] = {
                "works": True,
                "finite": bool(jnp.all(jnp.isfinite(grad))),
                "grad_norm": float(jnp.linalg.norm(grad)),
                "compile_s": compile_s,
            }
            calls["reverse"] = lambda: g_exe(source, target)
        except Exception as err:
            out["reverse"] = {"works": False, "error": _error(err)}

        def jvp(x, t, dx):
            return jax.jvp(lambda a: fwd(a, t), (x,), (dx,))

        try:
            j_exe, compile_s = compile_timed(jvp, source, target, v)
            _, tangent = j_exe(source, target, v)
            out["forward"] = {"works": True, "finite": bool(jnp.isfinite(tangent)), "compile_s": compile_s}
            if grad is not None:
                dot = float(jnp.vdot(grad, v))
                out["forward"]["rel_diff_vs_reverse"] = abs(float(tangent) - dot) / max(abs(dot), 1e-12)
            calls["forward"] = lambda: j_exe(source, target, v)
        except Exception as err:
            out["forward"] = {"works": False, "error": _error(err)}
    for key, timing in _timeit_interleaved(calls, repeats).items():
        out[key].update(timing)
    if "jit" in calls:
        for key in ("reverse", "forward"):
            if key in calls:
                out[key]["cost_vs_forward"] = out[key]["median_s"] / out["jit"]["median_s"]
    return out


def _line_scan(fwd, source, target, v, reach: float = 0.05, points: int = 2001) -> dict:
    """The score along x + s·u, |s| ≤ ``reach``, u = v scaled to ‖x‖: jumps are steps between
    neighbouring points more than 10 times both neighbouring steps (a discrete choice changing,
    which a gradient cannot see)."""
    u = v * (jnp.linalg.norm(source) / jnp.linalg.norm(v))
    s = jnp.linspace(-reach, reach, points)
    values = np.asarray(jax.jit(jax.vmap(lambda a: fwd(source + a * u, target)))(s))
    steps = np.abs(np.diff(values))
    neighbours = np.maximum(np.r_[steps[1:], 0], np.r_[0, steps[:-1]])
    jumps = steps > 10 * neighbours + 1e-9 * max(np.abs(values).max(), 1)
    return {
        "reach": reach,
        "points": points,
        "jumps": int(jumps.sum()),
        "largest_jump": float(steps[jumps].max()) if jumps.any() else 0.0,
        "value_range": [float(values.min()), float(values.max())],
    }


def _finite_difference_check(name: str, seed: int = 3) -> dict:
    """float64: ⟨∇f, v⟩ against the central difference (f(x + hv) − f(x − hv)) / 2h."""
    with _x64():
        data = _data(FD_SIZES, jnp.float64, seed=seed)
        fwd, source, target, _ = _problem(name, FD_SIZES, data)
        v = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(source.shape), jnp.float64)
        try:
            f = jax.jit(fwd)
            g = jax.jit(jax.grad(fwd))(source, target)
            fd = (float(f(source + FD_STEP * v, target)) - float(f(source - FD_STEP * v, target))) / (
                2 * FD_STEP
            )
            analytic = float(jnp.vdot(g, v))
            out = {
                "analytic": analytic,
                "finite_difference": fd,
                "rel_err": abs(analytic - fd) / max(abs(fd), 1e-8),
                "sizes": FD_SIZES,
                "step": FD_STEP,
            }
            if jt.get_estimator(name).info.source == "features":
                out["line_scan"] = _line_scan(fwd, source, target, v)
            return out
        except Exception as err:
            return {"error": _error(err)}


def _static_options(name: str, source, target, static: dict, data: dict) -> list[str]:
    """The options the estimator treats as static (its eager check's static dict, restricted to its
    public options), with those that must be Python ints though not shape-giving."""
    info = jt.get_estimator(name).info
    if source is None:
        keys = [k for k in info.options if k == "num_target_classes"]
    else:
        extra = {"key": data["key"]} if "key" in info.options else {}
        checked = info.check(source, target, {**static, **extra}, 0)
        keys = [k for k in checked.static if k in info.options]
    return keys + list(EXTRA_STATIC.get(name, ()))


def bench_estimator(name: str, sizes: dict, repeats: int, fd: bool) -> dict:
    data = _data(sizes, jnp.float32)
    info = jt.get_estimator(name).info
    fwd, source, target, static = _problem(name, sizes, data)
    row = {
        "estimator": name,
        "source": info.source,
        "target": info.target,
        "passed": static,
        "static": _static_options(name, source, target, static, data),
    }
    args = (target,) if source is None else (source, target)
    differentiable = info.source not in NO_GRADIENT
    row.update(_timed_cases(fwd, args, repeats, seed=1, derivatives=differentiable))
    row["vmap"] = _vmap_check(fwd, source, target, data["stack_seed"])
    if source is not None:
        row["traced_options"] = _traced_options_check(name, source, target, static, data)
    if not differentiable:
        row["reverse"] = row["forward"] = {"works": False, "why": NO_GRADIENT[info.source]}
        return row
    if fd:
        row["finite_difference_float64"] = _finite_difference_check(name)
    return row


def run(tiny: bool, repeats: int, only: list[str] | None = None, fd: bool = True) -> dict:
    sizes = TINY if tiny else SIZES
    r = 1 if tiny else repeats
    names = [name for name in jt.available_estimators() if not only or name in only]
    results = []
    for name in names:
        start = time.perf_counter()
        results.append(bench_estimator(name, sizes, r, fd))
        results[-1]["wall_s"] = time.perf_counter() - start
        print(f"  {name}: {results[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    config = {
        "repeats": r,
        "only": only,
        "seed": 0,
        "sizes": sizes,
        "vmap_stack": STACK,
        "fd": fd,
        # LAPACK calls (SVD, Cholesky, triangular solves) go through OpenBLAS, whose threads fight
        # other processes for the cores on a shared machine: record what they were allowed
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "XLA_FLAGS")},
        "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return report(results, tiny, config)


def _static_cell(row: dict) -> str:
    if not row["jit"]["works"]:
        return f"fails: {row['jit']['error']}"
    static = ", ".join(f"`{k}`" for k in row["static"]) or "none"
    traced = row.get("traced_options", {})
    ok = [f"`{k}`" for k, v in traced.items() if v["works"]]
    bad = [f"`{k}` ({v.get('error', 'differs')})" for k, v in traced.items() if not v["works"]]
    cell = f"yes; static: {static}"
    if ok:
        cell += f"; traced: {', '.join(ok)}"
    if bad:
        cell += f"; not traceable: {', '.join(bad)}"
    return cell


def _mode_cell(mode: dict) -> str:
    if "why" in mode:
        return mode["why"]
    if not mode["works"]:
        return f"fails: {mode['error']}"
    return "yes, finite" if mode["finite"] else "yes, **not finite**"


def _ratio_cell(row: dict) -> str:
    parts = []
    for key, label in (("reverse", "grad"), ("forward", "jvp")):
        mode = row.get(key, {})
        if mode.get("works"):
            parts.append(f"{label} {mode['cost_vs_forward']:.1f}×")
    return ", ".join(parts) or "—"


def table(report: dict) -> str:
    lines = [
        "| estimator | jit (static arguments) | vmap | reverse grad | forward grad | grad cost ÷ forward |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        vmap = "yes" if row["vmap"]["works"] else f"fails: {row['vmap']['error']}"
        lines.append(
            f"| `{row['estimator']}` | {_static_cell(row)} | {vmap} | {_mode_cell(row['reverse'])} "
            f"| {_mode_cell(row['forward'])} | {_ratio_cell(row)} |"
        )
    return "\n".join(lines)


def _details(report: dict) -> str:
    lines = [f"{report['device']} jax {report['jax']} ({report['dtype']}), sizes {report['config']['sizes']}"]
    for row in report["results"]:
        jit = row["jit"]
        text = f"{row['estimator']:20s}"
        if jit["works"]:
            text += f" forward {jit['median_s'] * 1e3:8.2f} ms (compile {jit['compile_s']:.2f} s)"
        for key in ("reverse", "forward"):
            mode = row.get(key, {})
            if mode.get("works"):
                text += f"  {key} {mode['median_s'] * 1e3:8.2f} ms"
        if row["vmap"]["works"]:
            text += f"  vmap≡loop {row['vmap']['max_rel_diff_vs_loop']:.1e}"
        if "rel_diff_vs_reverse" in row.get("forward", {}):
            text += f"  jvp≡⟨grad,v⟩ {row['forward']['rel_diff_vs_reverse']:.1e}"
        fd = row.get("finite_difference_float64")
        if fd:
            text += f"  float64 FD rel err {fd['rel_err']:.1e}" if "rel_err" in fd else f"  FD {fd['error']}"
            if "line_scan" in fd:
                text += f"  jumps {fd['line_scan']['jumps']} (largest {fd['line_scan']['largest_jump']:.1e})"
        lines.append(text)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="jaxtransfer-output/bench/gradients.json", help="JSON report")
    parser.add_argument("--only", nargs="+", help="run only these estimators")
    parser.add_argument("--no-fd", action="store_true", help="skip the float64 finite-difference check")
    args = parser.parse_args(argv)
    result = run(args.tiny, args.repeats, args.only, fd=not args.no_fd)
    result["table"] = table(result)
    write_report(result, args.out)
    print(_details(result))
    print()
    print(result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
