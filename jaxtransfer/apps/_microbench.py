"""Microbenchmarks of ``score_matrix``: any estimator at chosen sizes, on the current devices.

:func:`microbench` generates synthetic inputs on the device from a seed, compiles
``score_matrix`` for each estimator (compile time measured apart:
``jax.jit(f).lower(...).compile()``), runs it after a warm-up, each repetition
ending in ``jax.block_until_ready``, and reports the median and quartiles of
the run time, pairs per second, the achieved FLOP/s of a stated FLOP model
against the device's own measured matmul rate, and peak memory. ``jaxtransfer
bench`` is its command line; ``bench/gpu_scale.sh`` its large GPU run.

**Inputs** (a fixed seed, made on the device, never on the host): features
and real predictions are standard normal [S, n, d] (predictions [S, n, Cz]);
probabilities are ``softmax(2·z)`` of a normal z [S, n, Cz]; source labels are
uniform in [0, Cz), target labels uniform in [0, C). Estimators of real-valued
targets (Linear/Label MSE) get the one-hot [T, n, C] encoding of the target
labels (ridge on one-hot classes). Source s is drawn from its own key
``split(key, S)[s]``, so the inputs do not depend on how the sources are chunked.

**Memory.** The sources of all S pairs' rows are held on the device at once when
they fit in ``memory_fraction`` of the device's memory (``bytes_limit`` of
``device.memory_stats()``; on CPU the machine's RAM); otherwise they are made
and scored ``source_chunk`` sources at a time, and the reported time is the
sum of the chunks' medians (quartiles likewise summed) with generation left out.
1000 sources of n = 10,000 × d = 1024 float32 features are 41 GB: one chunk on
an H200 at the default fraction 0.5 (with ``XLA_PYTHON_CLIENT_MEM_FRACTION=0.9``),
two on an 80 GB H100. Generation itself runs ``lax.map`` over sources in
batches of at most about 1 GB.

**FLOP model** (:func:`flop_model`; an honest count of the dominant dense work,
not of what XLA executed). With m = min(n, d) and k target columns (C for
one-hot classes):

* Gram matrix of a source: 2·n·d·m (the full d×d product AᵀA, or the n×n
  kernel AAᵀ when n < d; XLA computes the full product, not half);
* symmetric eigendecomposition with vectors: 9·m³ (Golub & Van Loan's count
  for the symmetric QR algorithm; GPU solvers do different work);
* ``logme``: per source Gram + eigh + the basis U = AV (2·n·d·m); per pair
  the projection Uᵀy and the residual y − Uz, 4·n·m·C. The fixed-point
  iteration on the spectrum (O(m·C) per step) is not counted;
* ``linear_mse``/``label_mse``: per source Gram + a Cholesky factor (m³/3)
  when a single λ makes C + nλI well conditioned (for these unit-variance
  inputs: λ ≥ √eps·d), else Gram + eigh + basis as LogME; per pair
  4·n·m·k (+ 2·m²·k for the triangular solves);
* ``nce``/``conditional_entropy``: the joint counts as the one-hot product,
  2·n·Cz·C per pair (the kernel may multiply int8/bf16 one-hots or
  scatter-add instead: a figure against the float32 matmul rate is then
  only indicative);
* ``leep``: 2·n·Cz·(C + 1) per pair; ``soft_nce``: 2·n·Cz·C per pair;
* the others: not modelled (``None``).

**Stages.** With a feature-source estimator in the run and ``stages=True``,
the two floors of the factorising estimators are timed on the same sources:
``gram``, every source's centred Gram matrix FᵀF (float32 HIGHEST), and
``eigh``, ``jnp.linalg.eigh`` of all those d×d matrices in one batched call.

**Peak memory** is ``device.memory_stats()["peak_bytes_in_use"]`` where the
device reports it (GPU, TPU): the process's peak since it started, so it grows
monotonically through the estimators of one run; on CPU it is the process's
peak resident set size (``resource.getrusage(...).ru_maxrss``). Each row also
carries XLA's own estimate for its compiled program (arguments, outputs,
temporaries), where the backend provides one.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..estimators import available_estimators, get_estimator, score_matrix
from .reproduce import code_version

__all__ = ["compile_timed", "flop_model", "matmul_rate", "microbench", "microbench_table", "time_call"]

_HI = lax.Precision.HIGHEST
_GEN_BYTES = 1 << 30  # at most about this much per generation / stage step
_DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------- timing (shared with bench/)


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls, each ending in ``block_until_ready``.

    Returns:
      ``{"median_s", "q25_s", "q75_s", "min_s", "max_s", "repeats"}`` (seconds, wall clock).
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    q25, q50, q75 = np.percentile(times, [25, 50, 75])
    return {
        "median_s": float(q50),
        "q25_s": float(q25),
        "q75_s": float(q75),
        "min_s": float(min(times)),
        "max_s": float(max(times)),
        "repeats": repeats,
    }


def compile_timed(fn: Callable, *args) -> tuple[Any, float]:
    """``jax.jit(fn).lower(*args).compile()`` and the seconds it took (tracing included)."""
    start = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - start


def matmul_rate(size: int | None = None, *, dtype: str = "float32", repeats: int = 5) -> dict:
    """The default device's measured matmul rate: a timed [size, size] @ [size, size] at HIGHEST precision.

    Args:
      size: the matrix side; default 8192 on GPU/TPU, 1024 on CPU.
      dtype: ``"float32"`` or ``"float64"`` (float64 needs x64 enabled).
      repeats: timed repetitions (after one warm-up).

    Returns:
      ``{"size", "dtype", "flops", "flops_per_s", **time_call(...)}`` with flops = 2·size³.
    """
    if size is None:
        size = 1024 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(1), (size, size), dtype)
    b = jax.random.normal(jax.random.key(2), (size, size), dtype)
    exe, _ = compile_timed(lambda x, y: jnp.matmul(x, y, precision=_HI), a, b)
    timing = time_call(lambda: exe(a, b), repeats)
    flops = 2.0 * size**3
    return {"size": size, "dtype": dtype, "flops": flops, "flops_per_s": flops / timing["median_s"], **timing}


# --------------------------------------------------------------------------- FLOP model


def flop_model(
    name: str,
    *,
    sources: int,
    targets: int,
    samples: int,
    dim: int,
    classes: int,
    source_classes: int,
    dtype: str = "float32",
    l2: float = 1.0,
) -> dict | None:
    """The FLOP count of one ``score_matrix`` call under the module's model, or None where not modelled.

    Returns:
      ``{"flops", "per_source", "per_pair", "model"}`` (``model`` says what is counted).

    Example:
      >>> from jaxtransfer.apps import flop_model
      >>> flop_model("nce", sources=2, targets=3, samples=100, dim=1, classes=2, source_classes=2)["flops"]
      4800.0
    """
    s, t, n, c, cz = sources, targets, samples, classes, source_classes
    if name in ("nce", "conditional_entropy", "soft_nce"):
        pair, src, text = 2.0 * n * cz * c, 0.0, "one-hot product 2·n·Cz·C per pair"
    elif name == "leep":
        pair, src, text = 2.0 * n * cz * (c + 1), 0.0, "2·n·Cz·(C+1) per pair"
    elif name in ("logme", "linear_mse", "label_mse"):
        d = cz if name == "label_mse" else dim
        m = min(n, d)
        gram = 2.0 * n * d * m
        eps = float(np.finfo(dtype).eps)
        if name != "logme" and np.ndim(l2) == 0 and float(l2) >= math.sqrt(eps) * d:
            src, pair = gram + m**3 / 3.0, 4.0 * n * m * c + 2.0 * m * m * c
            text = "Gram 2·n·d·m + Cholesky m³/3 per source; 4·n·m·k + 2·m²·k per pair"
        else:
            src, pair = gram + 9.0 * m**3 + 2.0 * n * d * m, 4.0 * n * m * c
            text = "Gram 2·n·d·m + eigh 9·m³ + basis 2·n·d·m per source; 4·n·m·k per pair"
    else:
        return None
    return {"flops": s * src + s * t * pair, "per_source": src, "per_pair": pair, "model": text}


# --------------------------------------------------------------------------- inputs


def _one_input(kind: str, key, n: int, width: int, classes: int, dtype):
    if kind in ("features", "predictions"):
        return jax.random.normal(key, (n, width), dtype)
    if kind == "probabilities":
        return jax.nn.softmax(2 * jax.random.normal(key, (n, width), dtype), axis=-1)
    labels = jax.random.randint(key, (n,), 0, classes, dtype=jnp.int32)
    return labels if kind == "labels" else jax.nn.one_hot(labels, classes, dtype=dtype)


def _row_bytes(kind: str, n: int, width: int, classes: int, itemsize: int) -> int:
    """Bytes of one source's or target's input."""
    if kind == "labels":
        return 4 * n
    return n * (classes if kind == "values" else width) * itemsize


def _generate(kind, keys, n, width, classes, dtype, sharding):
    """Inputs [len(keys), n, ...] made on the device, ``lax.map`` in batches of about 1 GB at most."""
    per = _row_bytes(kind, n, width, classes, jnp.dtype(dtype).itemsize)
    batch = int(max(1, min(len(keys), _GEN_BYTES // max(per, 1))))
    fn = jax.jit(
        lambda k: lax.map(lambda x: _one_input(kind, x, n, width, classes, dtype), k, batch_size=batch),
        out_shardings=sharding,
    )
    return jax.block_until_ready(fn(keys))


def _source_shape(kind, n, d, cz):
    return {"labels": (n,), "features": (n, d)}.get(kind, (n, cz))


# --------------------------------------------------------------------------- memory


def _memory_limit(device) -> tuple[int, str]:
    stats = _device_stats(device)
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), "device bytes_limit"
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "host RAM"


def _device_stats(device) -> dict | None:
    try:
        return device.memory_stats()
    except Exception:  # backends without allocator statistics
        return None


def _peak_memory(device) -> dict:
    stats = _device_stats(device)
    if stats and "peak_bytes_in_use" in stats:
        return {"bytes": int(stats["peak_bytes_in_use"]), "source": "device peak_bytes_in_use since start"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "bytes": int(rss if sys.platform == "darwin" else rss * 1024),
        "source": "process peak RSS (ru_maxrss)",
    }


def _compiled_memory(exe) -> dict | None:
    try:
        m = exe.memory_analysis()
    except Exception:  # not provided by this backend
        return None
    if m is None:
        return None
    return {key: int(getattr(m, f"{key}_size_in_bytes", 0) or 0) for key in ("argument", "output", "temp")}


# --------------------------------------------------------------------------- stages


def _centred_gram(f):
    fc = f - jnp.mean(f, axis=0, keepdims=True)
    return jnp.matmul(fc.T, fc, precision=_HI)


def _time_stages(features, repeats: int, warmup: int) -> dict:
    """Time every source's centred Gram matrix (``lax.map`` in steps of about 1 GB of centred
    features) and one batched ``eigh`` of them all."""
    count, n, d = features.shape
    batch = int(max(1, min(count, _GEN_BYTES // max(n * d * features.dtype.itemsize, 1))))
    gram_exe, _ = compile_timed(lambda x: lax.map(_centred_gram, x, batch_size=batch), features)
    out = {"gram": time_call(lambda: gram_exe(features), repeats, warmup)}
    grams = gram_exe(features)
    eigh_exe, _ = compile_timed(jnp.linalg.eigh, grams)
    out["eigh"] = time_call(lambda: eigh_exe(grams), repeats, warmup)
    return out


# --------------------------------------------------------------------------- the benchmark


@contextlib.contextmanager
def _precision(dtype: str):
    if dtype != "float64":
        yield
        return
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.7
        from jax.experimental import enable_x64 as ctx
    with ctx(True):
        yield


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _names(estimators: str | Sequence[str]) -> list[str]:
    items = [estimators] if isinstance(estimators, str) else list(estimators)
    if not items:
        raise ValueError("estimators is empty; expected one or more estimator names or 'all'")
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"estimators must be names (str), got {type(item).__name__}")
        if item == "all":
            found = [e for e in available_estimators() if get_estimator(e).info.source != "none"]
        else:
            info = get_estimator(item).info  # ValueError for unknown names
            if info.source == "none":
                raise ValueError(
                    f"estimators: {item} takes no source, so it has no score_matrix to benchmark"
                )
            found = [item]
        names += [e for e in found if e not in names]
    return names


def microbench(
    estimators: str | Sequence[str],
    *,
    sources: int = 8,
    targets: int = 8,
    samples: int = 1000,
    dim: int = 64,
    classes: int = 10,
    source_classes: int = 10,
    repeats: int = 5,
    warmup: int = 1,
    batch_size: int | None = None,
    dtype: str = "float32",
    devices: str = "first",
    seed: int = 0,
    stages: bool = True,
    matmul_size: int | None = None,
    memory_fraction: float = 0.5,
    source_chunk: int | None = None,
    print_fn: Callable[[str], Any] | None = None,
) -> dict:
    """Time ``score_matrix`` of each estimator over S synthetic sources × T targets on the device.

    Args:
      estimators: a name, ``"all"`` (every estimator that takes a source) or a list of them.
      sources, targets, samples, dim: S, T, n and the feature width d.
      classes, source_classes: C (target labels, one-hot columns) and Cz (source
        labels, probability and prediction columns).
      repeats, warmup: timed and untimed runs of each compiled call.
      batch_size: ``score_matrix``'s sources per step (default: the estimator's own).
      dtype: ``"float32"`` or ``"float64"`` (runs under x64 for the call).
      devices: ``"first"`` (the default device) or ``"all"`` (every local
        device: the sources axis is sharded over them with a ``NamedSharding``,
        S must be a multiple of the device count, and the sharded inputs are
        passed to ``score_matrix`` as they are).
      seed: of the synthetic inputs.
      stages: also time the ``gram`` and ``eigh`` floors when an estimator takes features.
      matmul_size: side of the timed matmul (default 8192 on accelerators, 1024 on CPU).
      memory_fraction: of the device memory the sources may take (module notes).
      source_chunk: sources held at once (default: all that fit in ``memory_fraction``).
      print_fn: progress lines (e.g. ``print``); None is silent.

    Returns:
      A JSON-ready dict: ``config``, ``environment`` (jax version, backend,
      devices, code version), ``matmul`` (:func:`matmul_rate`), ``results``
      (one row per estimator: compile time, run timing, pairs per second,
      FLOPs and achieved FLOP/s against the matmul rate, memory, a score
      summary), ``stages`` and ``total_median_s`` (the estimators' medians summed).

    Raises:
      ValueError, TypeError: a bad size, dtype, device choice or estimator name.
    """
    sizes = {
        "sources": sources,
        "targets": targets,
        "samples": samples,
        "dim": dim,
        "classes": classes,
        "source_classes": source_classes,
        "repeats": repeats,
    }
    s, t, n, d, c, cz, repeats = (_positive(k, v) for k, v in sizes.items())
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if batch_size is not None:
        batch_size = _positive("batch_size", batch_size)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if devices not in ("first", "all"):
        raise ValueError(f"devices must be 'first' or 'all', got {devices!r}")
    if not 0 < memory_fraction <= 1:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
    names = _names(estimators)
    say = print_fn or (lambda *_: None)
    with _precision(dtype):
        return _run(
            names,
            s,
            t,
            n,
            d,
            c,
            cz,
            repeats,
            warmup,
            batch_size,
            dtype,
            devices,
            seed,
            stages,
            matmul_size,
            memory_fraction,
            source_chunk,
            say,
        )


def _run(
    names,
    s,
    t,
    n,
    d,
    c,
    cz,
    repeats,
    warmup,
    batch_size,
    dtype,
    devices,
    seed,
    stages,
    matmul_size,
    memory_fraction,
    source_chunk,
    say,
) -> dict:
    devs = jax.local_devices() if devices == "all" else [jax.devices()[0]]
    ndev = len(devs)
    if s % ndev:
        raise ValueError(f"sources must be a multiple of the {ndev} devices to shard over, got {s}")
    if ndev > 1:
        mesh = jax.sharding.Mesh(np.array(devs), ("sources",))
        shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("sources"))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    else:
        shard = replicated = jax.sharding.SingleDeviceSharding(devs[0])
    itemsize = jnp.dtype(dtype).itemsize
    limit, limit_source = _memory_limit(devs[0])
    budget = memory_fraction * limit * (ndev if limit_source.startswith("device") else 1)  # RAM is shared

    say(f"matmul rate: timing a {'default-size' if matmul_size is None else matmul_size} square matmul")
    matmul = matmul_rate(matmul_size, dtype=dtype, repeats=max(3, min(repeats, 10)))
    peak_rate = matmul["flops_per_s"] * ndev

    key = jax.random.key(seed)
    rows: dict[str, dict] = {}
    stage_rows: dict[str, dict] = {}
    kinds: dict[str, list[str]] = {}
    for name in names:
        kinds.setdefault(get_estimator(name).info.source, []).append(name)

    for kind_index, (kind, group) in enumerate(kinds.items()):
        per_source = _row_bytes(kind, n, cz if kind != "features" else d, c, itemsize)
        if source_chunk is not None:
            chunk = _positive("source_chunk", source_chunk)
        else:
            chunk = int(budget // per_source) if per_source * s > budget else s
        chunk = min(s, max(ndev, chunk - chunk % ndev))
        bounds = [(a, min(a + chunk, s)) for a in range(0, s, chunk)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] != chunk:
            bounds[-1] = (s - chunk, s)  # the last chunk overlaps the one before: same compiled shape
            overlap = bounds[-2][1] - bounds[-1][0]
        else:
            overlap = 0
        source_keys = jax.random.split(jax.random.fold_in(key, kind_index), s)
        target_keys = jax.random.split(jax.random.fold_in(key, 1000), t)
        tgt_cache: dict[str, jax.Array] = {}
        exes: dict[str, tuple] = {}
        chunk_times: dict[str, list[dict]] = {e: [] for e in group}
        scores: dict[str, list[np.ndarray]] = {e: [] for e in group}
        do_stages = stages and kind == "features"
        stage_times: dict[str, list[dict]] = {"gram": [], "eigh": []}
        for i, (lo, hi) in enumerate(bounds):
            say(f"{kind}: generating sources {lo}..{hi - 1} of {s} on the device")
            src = _generate(kind, source_keys[lo:hi], n, cz if kind != "features" else d, c, dtype, shard)
            skip = overlap if i == len(bounds) - 1 else 0
            for name in group:
                info = get_estimator(name).info
                if info.target not in tgt_cache:
                    tgt_cache[info.target] = _generate(info.target, target_keys, n, d, c, dtype, replicated)
                tgt = tgt_cache[info.target]
                opts = {"batch_size": batch_size}
                if "num_target_classes" in info.options:
                    opts["num_target_classes"] = c
                if "num_source_classes" in info.options:
                    opts["num_source_classes"] = cz
                opts.update(info.caller_options(seed=seed))
                if name not in exes:
                    say(f"{name}: compiling for {hi - lo} sources × {t} targets")
                    fn = lambda a, b, _name=name, _opts=opts: score_matrix(_name, a, b, **_opts)  # noqa: E731
                    exes[name] = compile_timed(fn, src, tgt)
                exe = exes[name][0]
                say(f"{name}: timing {repeats} runs")
                chunk_times[name].append(time_call(lambda e=exe, a=src, b=tgt: e(a, b), repeats, warmup))
                scores[name].append(np.asarray(exe(src, tgt))[skip:])
            if do_stages:
                say(f"stages: timing the gram and eigh floors on {hi - lo} sources")
                for stage, timing in _time_stages(src, repeats, warmup).items():
                    stage_times[stage].append(timing)
            del src
        for name in group:
            info = get_estimator(name).info
            exe, compile_s = exes[name]
            timing = _sum_timings(chunk_times[name])
            out = np.concatenate(scores[name], axis=0)
            flops = flop_model(
                name, sources=s, targets=t, samples=n, dim=d, classes=c, source_classes=cz, dtype=dtype
            )
            rate = None if flops is None else flops["flops"] / timing["median_s"]
            row = {
                "estimator": name,
                "source": info.source,
                "target": info.target,
                "source_shape": [s, *_source_shape(kind, n, d, cz)],
                "source_bytes": per_source * s,
                "source_chunk": chunk,
                "chunks": len(bounds),
                "compile_s": compile_s,
                "run": timing,
                "pairs": s * t,
                "pairs_per_s": s * t / timing["median_s"],
                "flops": None if flops is None else flops["flops"],
                "flop_model": None if flops is None else flops["model"],
                "achieved_flops_per_s": rate,
                "fraction_of_matmul_rate": None if rate is None else rate / peak_rate,
                "peak_memory": _peak_memory(devs[0]),
                "compiled_memory": _compiled_memory(exe),
                "scores": {
                    "shape": list(out.shape),
                    "finite_fraction": float(np.isfinite(out).mean()),
                    "mean": float(np.nanmean(out)) if np.isfinite(out).any() else None,
                },
            }
            rows[name] = row
        if do_stages:
            m = d  # the stages form the d×d Gram matrix whatever n
            for stage, flops in (("gram", 2.0 * n * d * d * s), ("eigh", 9.0 * m**3 * s)):
                timing = _sum_timings(stage_times[stage])
                stage_rows[stage] = {
                    "run": timing,
                    "flops": flops,
                    "achieved_flops_per_s": flops / timing["median_s"],
                    "fraction_of_matmul_rate": flops / timing["median_s"] / peak_rate,
                    "per_source_s": timing["median_s"] / s,
                }
            stage_rows["model"] = "gram: 2·n·d² per source (the full product); eigh: 9·d³ per source"

    results = [rows[name] for name in names]
    return {
        "config": {
            "estimators": names,
            "sources": s,
            "targets": t,
            "samples": n,
            "dim": d,
            "classes": c,
            "source_classes": cz,
            "repeats": repeats,
            "warmup": warmup,
            "batch_size": batch_size,
            "dtype": dtype,
            "devices": devices,
            "seed": seed,
            "memory_fraction": memory_fraction,
            "memory_limit_bytes": limit,
            "memory_limit_source": limit_source,
        },
        "environment": _environment(devs),
        "matmul": {**matmul, "devices": ndev, "total_flops_per_s": peak_rate},
        "results": results,
        "stages": stage_rows,
        "total_median_s": float(sum(r["run"]["median_s"] for r in results)),
    }


def _sum_timings(parts: list[dict]) -> dict:
    """One chunk's timing, or the chunks' timings summed field by field (the whole run's time)."""
    if len(parts) == 1:
        return parts[0]
    out = {k: float(sum(p[k] for p in parts)) for k in ("median_s", "q25_s", "q75_s", "min_s", "max_s")}
    return {**out, "repeats": parts[0]["repeats"], "chunks_summed": len(parts)}


def _environment(devs) -> dict:

    try:
        import jaxlib

        jaxlib_version = jaxlib.__version__
    except (ImportError, AttributeError):
        jaxlib_version = "unknown"
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "backend": jax.default_backend(),
        "device_kind": devs[0].device_kind,
        "devices": [str(x) for x in devs],
        "local_devices": [str(x) for x in jax.local_devices()],
        "code": code_version(),
    }


# --------------------------------------------------------------------------- the table


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _ms(seconds: float, unit: bool = True) -> str:
    return f"{seconds * 1e3:.4g}" + (" ms" if unit else "")


def microbench_table(report: dict) -> str:
    """The report as a plain-text table (one row per estimator, then the stages and the total)."""
    env, mm, cfg = report["environment"], report["matmul"], report["config"]
    lines = [
        f"{env['device_kind']} × {mm['devices']} ({env['backend']}), jax {env['jax']}, {cfg['dtype']}; "
        f"S={cfg['sources']} T={cfg['targets']} n={cfg['samples']} d={cfg['dim']} "
        f"C={cfg['classes']} Cz={cfg['source_classes']}",
        f"matmul {mm['size']}² HIGHEST: {_si(mm['flops_per_s'], 'FLOP/s')} per device",
        "",
        f"{'estimator':20s} {'compile':>8s} {'median':>10s} {'q25–q75':>19s} {'pairs/s':>10s} "
        f"{'FLOP/s':>12s} {'of matmul':>9s} {'peak mem':>10s}",
    ]

    def fmt_row(label, compile_s, run, pairs_s, rate, frac, mem):
        return (
            f"{label:20s} {'-' if compile_s is None else f'{compile_s:.2f} s':>8s} "
            f"{_ms(run['median_s']):>10s} {_ms(run['q25_s'], unit=False) + '–' + _ms(run['q75_s']):>19s} "
            f"{_si(pairs_s, ''):>10s} {_si(rate, 'FLOP/s'):>12s} "
            f"{'-' if frac is None else f'{100 * frac:.1f}%':>9s} {_si(mem, 'B'):>10s}"
        )

    for r in report["results"]:
        lines.append(
            fmt_row(
                r["estimator"],
                r["compile_s"],
                r["run"],
                r["pairs_per_s"],
                r["achieved_flops_per_s"],
                r["fraction_of_matmul_rate"],
                r["peak_memory"]["bytes"],
            )
        )
    for stage in ("gram", "eigh"):
        if stage in report["stages"]:
            st = report["stages"][stage]
            lines.append(
                fmt_row(
                    f"[stage] {stage}",
                    None,
                    st["run"],
                    None,
                    st["achieved_flops_per_s"],
                    st["fraction_of_matmul_rate"],
                    None,
                )
            )
    lines.append(f"total (estimators' medians summed): {report['total_median_s']:.4g} s")
    if report["results"]:
        lines.append(f"peak memory: {report['results'][-1]['peak_memory']['source']}")
    return "\n".join(lines)
