"""Shared machinery of the estimator-quality protocols (``jaxtransfer reproduce``).

Both protocols score every source task against every other target task on the
same images, measure actual transfer, and judge each estimator by
:func:`jaxtransfer.evaluation.evaluate`. Pairs of a task with itself do not
exist as transfer: :func:`pairs_mask` marks them missing, so each target is
ranked over the S − 1 other sources, and the bootstrap resamples the S
sources with one draw for every target (a target keeps the drawn sources
other than itself). A transfer run that failed (NaN) is missing too.

Actual transfer is measured with ``config.seeds`` seeds of the transfer runs
(seed ``config.seed + r`` for run r: a new head's initialisation and the
order of mini-batches; head retraining is a deterministic fit, so its runs
agree exactly). The ground truth of a pair is the mean over the runs, and the
runs' agreement gives each kind of transfer a noise ceiling
(:func:`jaxtransfer.evaluation.seed_agreement`,
:func:`jaxtransfer.evaluation.noise_ceiling`).

This module holds what the two share: the model cache; the protocol loop
(:func:`run_protocol`: train or load a source model per task, run it over
every image, measure its transfer to every task or load that measurement,
score every pair, judge every estimator against every ground truth), into
which each protocol plugs its own :class:`Stages`; the share of variance the
target alone explains; and the pieces of the reports that depend on the
off-diagonal protocol or that both reports print. The report writers
themselves are in :mod:`jaxtransfer.apps._report`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ... import features, models
from ..._io import read_npz, write_npz
from ..._progress import progress_bar
from ...evaluation import evaluate, noise_ceiling, seed_agreement
from .._report import scatter_grid

__all__ = [
    "DEFAULT_SEEDS",
    "INTERVAL_NOTE",
    "ModelCache",
    "Run",
    "Source",
    "Stages",
    "Tasks",
    "cache_note",
    "ceiling_note",
    "ceilings",
    "check_finite",
    "check_seeds",
    "code_version",
    "command",
    "environment",
    "generated_by",
    "judge",
    "machine",
    "pair_scatter",
    "pairs_mask",
    "protocol_header",
    "run_protocol",
    "source_model",
    "stage_times",
    "target_variance_share",
    "train_sources",
    "transfer_matrix",
    "transfer_runs",
    "variance_share_line",
]


INTERVAL_NOTE = (
    "Percentile intervals of the hit rate and the regret need not contain the point value: a resample "
    "repeats some sources and drops others, which changes which source is best."
)


def pairs_mask(num_tasks: int) -> np.ndarray:
    """bool [S, S]: the source–target pairs of S tasks that exist as transfer, every pair but a task with
    itself (False on the diagonal)."""
    return ~np.eye(num_tasks, dtype=bool)


def target_variance_share(actual: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of the variance of actual transfer [S, T] that the target alone explains (one-way R²).

    Over the pairs ``mask`` marks present (default all) that are not NaN:
    Σ_t m_t (ā_t − ā)² / Σ (a − ā)², with m_t the present pairs of target t,
    ā_t their mean and ā the mean of all present pairs.
    """
    a = np.asarray(actual, float)
    present = ~np.isnan(a) & (True if mask is None else np.asarray(mask, bool))
    if not present.any():
        return float("nan")
    grand = a[present].mean()
    total = np.sum((a[present] - grand) ** 2)
    counts = present.sum(axis=0)
    sums = np.where(present, a, 0.0).sum(axis=0)
    means = np.divide(sums, counts, out=np.full(a.shape[1], grand), where=counts > 0)
    between = np.sum(counts * (means - grand) ** 2)
    return float(between / total) if total > 0 else float("nan")


def _listed(stats) -> dict[str, list[float]]:
    return {k: [v.value, v.low, v.high] for k, v in stats.items()}


def judge(
    scores: dict[str, np.ndarray],
    truths: dict[str, np.ndarray],
    *,
    mask: np.ndarray,
    num_bootstrap: int,
    seed: int,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Every estimator [S, T] against every ground truth [S, T], over the pairs ``mask`` marks present.

    Returns:
      ``{truth: {estimator: {statistic: [value, low, high]}}}``. Statistics that
      are undefined (within-target correlations of a score constant within each
      target, such as the target-only baseline) are NaN.
    """
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for truth, actual in truths.items():
        out[truth] = {}
        for name, mat in scores.items():
            stats = evaluate(mat, actual, mask=mask, num_bootstrap=num_bootstrap, seed=seed)
            out[truth][name] = _listed(stats)
    return out


def ceilings(
    runs: dict[str, np.ndarray], *, mask: np.ndarray, num_bootstrap: int, seed: int
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """The noise ceiling of each ground truth, from its N runs [N, S, T] (empty when N = 1).

    Returns:
      ``{truth: {"between_seeds": stats, "ceiling": stats}}`` with statistics
      as :func:`judge`'s: ``between_seeds`` is
      :func:`~jaxtransfer.evaluation.seed_agreement` (the mean over ordered
      pairs of runs i ≠ j of every statistic of run i against run j: how well
      one run predicts another), ``ceiling`` is
      :func:`~jaxtransfer.evaluation.noise_ceiling` of it for the mean of the N
      runs (Pearson, Spearman and Kendall only), with the same bootstrap
      resamples of the sources as the estimators.
    """
    out = {}
    for truth, r in runs.items():
        if r.shape[0] < 2:
            continue
        agreement = seed_agreement(r, mask=mask, num_bootstrap=num_bootstrap, seed=seed)
        out[truth] = {
            "between_seeds": _listed(agreement),
            "ceiling": _listed(noise_ceiling(agreement, r.shape[0])),
        }
    return out


def check_seeds(config, seeds):
    """``config`` with ``seeds`` transfer seeds (unchanged when ``seeds`` is None), checked.

    Raises:
      ValueError: the number of seeds is not an integer >= 1.
    """
    n = config.seeds if seeds is None else seeds
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"seeds must be an integer >= 1 (transfer runs per pair), got {n!r}")
    return replace(config, seeds=int(n))


def ceiling_note(seeds: int) -> str:
    """The report's sentences on the seeds of the ground truth and on its noise ceiling."""
    if seeds < 2:
        return (
            "Actual transfer comes from one seed of the transfer runs, so no noise ceiling is measured "
            "(it needs at least 2 seeds: `--seeds N`)."
        )
    return (
        f"Actual transfer is the mean over {seeds} seeds of the transfer runs (a new head's "
        "initialisation and the order of mini-batches; head retraining is a deterministic fit and gives "
        "the same result with every seed). Below the estimators, two rows give the noise ceiling of the "
        "ground truth: *one seed's transfer vs another's* is every statistic of one run taken as the "
        f"scores against another run as the truth, averaged over the {seeds * (seeds - 1)} ordered "
        "pairs of runs — how well a rerun of the transfer predicts it; *noise-free transfer vs the mean "
        f"of {seeds} seeds* is what the noise-free transfer would reach against the mean the estimators "
        "are judged on, assuming independent noise per run: the runs' agreement r (Kendall τ and "
        "Spearman mapped to a Pearson r by the bivariate-normal identities r = sin(πτ/2), "
        f"r = 2 sin(πρ/6)) gives the mean's reliability R = {seeds}r / (1 + {seeds - 1}r) "
        "(Spearman–Brown), and the ceiling is √R, mapped back. No estimator can be expected to "
        "exceed the second row; both use the estimators' bootstrap resamples."
    )


def check_finite(scores: Mapping[str, np.ndarray], where: str) -> None:
    """Raise ``FloatingPointError`` naming the first estimator whose scores are not all finite."""
    for name, v in scores.items():
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"{where}: estimator {name} gave non-finite scores")


def _hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


class ModelCache:
    """Trained source models and measured transfer on disk, keyed by configuration, so a run can resume.

    Models are written with :func:`jaxtransfer.sources.save` (``.npz`` + JSON,
    no pickle) under ``root/<protocol>-<hash of the configuration>/``; measured
    results (arrays) with the package's safe ``.npz`` writer beside them.
    """

    def __init__(self, root: str | os.PathLike | None, protocol: str, config: dict):
        if root is None:
            base = os.environ.get("JAXTRANSFER_CACHE") or Path.home() / ".cache" / "jaxtransfer"
            root = Path(base) / "reproduce"
        self.folder = Path(root) / f"{protocol}-{_hash(config)}"
        self.hits = 0
        self.result_hits = 0

    def get_or_train(self, name: str, train: Callable[[], Any]):
        path = self.folder / f"{name}.npz"
        if path.is_file():
            try:
                model = models.load(path)
                self.hits += 1
                return model
            except ValueError:
                path.unlink()  # a stale or partial file: train again
        model = train()
        self.folder.mkdir(parents=True, exist_ok=True)
        models.save(path, model)
        return model

    def get_or_compute(self, name: str, config: dict, compute: Callable[[], dict]) -> dict[str, np.ndarray]:
        """Arrays ``compute()`` returns, or their copy stored under ``name`` and the hash of ``config``."""
        path = self.folder / f"{name}-{_hash(config)}.npz"
        if path.is_file():
            try:
                arrays = read_npz(path, what="cached results")
                self.result_hits += 1
                return arrays
            except ValueError:
                path.unlink()
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_npz(path, arrays)
        return arrays


def source_model(cache: ModelCache, name: str, num_outputs: int, arch: dict, x, y, *, config, seed: int):
    """A :class:`jaxtransfer.sources.SmallCNN` trained on ``(x, y)`` with ``config``'s epochs, batch
    size and learning rate and the given seed (initialisation and batches) — or its cached copy."""

    def fit():
        model = models.SmallCNN(num_outputs, seed=seed, **arch)
        trained, _ = models.train(
            model, x, y, epochs=config.source_epochs, batch_size=config.batch_size,
            learning_rate=config.learning_rate, seed=seed, progress=False,
        )  # fmt: skip
        return trained

    return cache.get_or_train(name, fit)


@dataclass(frozen=True)
class Tasks:
    """Tasks on the same images: each is a source (a model is trained on it) and a target.

    Attributes:
      images: [n, H, W] or [n, H, W, C] float32.
      targets: [T, n] integer class labels or [T, n, k] real values.
      names: the T task names.
      num_outputs: per task, the model's outputs (class count, or k).
      train: [n] bool, the train half (sources train on it, estimators
        score on it); the rest is the test half.
    """

    images: np.ndarray
    targets: np.ndarray
    names: list[str]
    num_outputs: list[int]
    train: np.ndarray


@dataclass(frozen=True)
class Source:
    """A source model, its outputs on every image and its measured transfer to every task.

    Attributes:
      model: the trained model (an NNX module).
      outputs: :func:`jaxtransfer.features.extract`'s result on all n images
        (``features``, ``logits``, ``probabilities``, ``labels``).
      transfer: what the protocol's ``measure`` returned for each seed,
        stacked: arrays by name, [N, T] per target and [N] for the seconds
        each stage took, N the number of seeds.
    """

    model: Any
    outputs: Any
    transfer: dict[str, np.ndarray]


@dataclass(frozen=True)
class Stages:
    """What one protocol plugs into :func:`run_protocol`.

    Attributes:
      name: names the protocol (or its dataset) in errors.
      arch: the keyword arguments of each source's :class:`jaxtransfer.models.SmallCNN`.
      measure: ``measure(model, outputs, seed)`` -> arrays by name: actual
        transfer to every task ([T] per kind) with the transfer runs' seed, and
        the seconds each stage took.
      transfer_key: what ``measure``'s results depend on beyond the source
        model and the seed; keys their cached copies.
      stage_seconds: ``measure``'s keys of seconds -> the stage each is added to.
      truths: the keys of ``measure``'s results every estimator is judged against.
      score: ``score(sources)`` -> (estimator -> [S, S] scores, whatever else
        the protocol keeps from that stage).
    """

    name: str
    arch: dict
    measure: Callable[[Any, Any], dict]
    transfer_key: dict
    stage_seconds: Mapping[str, str]
    truths: tuple[str, ...]
    score: Callable[[list[Source]], tuple[dict[str, np.ndarray], Any]]


def train_sources(
    cache: ModelCache, tasks: Tasks, stages: Stages, *, config, progress: bool | None, desc: str
) -> tuple[list[Source], dict[str, float]]:
    """Each task's source model (trained with seed ``config.seed + s``, or loaded from ``cache``), its
    outputs on every image, and its transfer ``stages.measure(model, outputs, seed)`` for the seeds
    ``config.seed + r``, r < ``config.seeds`` (or their cached copies, keyed by ``stages.transfer_key``
    and, beyond the first seed, the seed: a cache written before runs had several seeds serves the
    first).

    Returns:
      the sources in task order, and the seconds of each stage:
      ``source_training`` (training or loading, and extraction), then for
      each ``(key, stage)`` of ``stages.stage_seconds`` the sum over sources
      and seeds of the seconds ``measure`` reported under ``key`` (a cached
      result carries the time measured when it was computed).
    """
    timings = {"source_training": 0.0} | {stage: 0.0 for stage in stages.stage_seconds.values()}
    x, train = tasks.images, tasks.train
    sources = []
    bar = progress_bar(len(tasks.names), progress, desc, unit="source")
    for s, name in enumerate(tasks.names):
        t0 = time.perf_counter()
        model = source_model(
            cache, f"{s:02d}-{name}", tasks.num_outputs[s], stages.arch, x[train], tasks.targets[s, train],
            config=config, seed=config.seed + s,
        )  # fmt: skip
        outputs = features.extract(model, x, batch_size=256, progress=False)
        timings["source_training"] += time.perf_counter() - t0
        runs = []
        for r in range(config.seeds):
            seed = config.seed + r
            key = stages.transfer_key if r == 0 else stages.transfer_key | {"transfer_seed": seed}
            measure = partial(stages.measure, model, outputs, seed)
            runs.append(cache.get_or_compute(f"{s:02d}-{name}-transfer", key, measure))
        got = {k: np.stack([np.asarray(run[k]) for run in runs]) for k in runs[0]}
        for key, stage in stages.stage_seconds.items():
            timings[stage] += float(np.sum(got[key]))
        sources.append(Source(model, outputs, got))
        bar.update(1)
    bar.close()
    return sources, timings


def transfer_runs(sources: list[Source], key: str) -> np.ndarray:
    """[N, S, T] float64: what source s's ``measure`` reported under ``key`` with the r-th seed."""
    return np.stack([np.asarray(src.transfer[key], np.float64) for src in sources], axis=1)


def transfer_matrix(sources: list[Source], key: str) -> np.ndarray:
    """[S, T] float64: the mean over the seeds of what source s's ``measure`` reported under ``key``
    (NaN where a run failed)."""
    return transfer_runs(sources, key).mean(axis=0)


class Run(NamedTuple):
    """What :func:`run_protocol` computed.

    Attributes:
      sources: the S sources, in task order.
      actual: truth -> [S, S] float64 measured transfer, the mean over the seeds, for each of
        ``stages.truths``.
      runs: truth -> [N, S, S] float64, the transfer measured with each seed.
      mask: bool [S, S], the pairs judged (:func:`pairs_mask`).
      scores: estimator -> [S, S] scores, all finite.
      scored: whatever else ``stages.score`` returned.
      evaluation: ``{truth: {estimator: {statistic: [value, low, high]}}}`` (:func:`judge`).
      noise_ceiling: :func:`ceilings` (empty with one seed).
      target_variance_share: truth -> :func:`target_variance_share` of its pairs in ``mask``.
      timings: stage -> seconds: those of :func:`train_sources`, ``scoring`` and ``evaluation``.
    """

    sources: list[Source]
    actual: dict[str, np.ndarray]
    runs: dict[str, np.ndarray]
    mask: np.ndarray
    scores: dict[str, np.ndarray]
    scored: Any
    evaluation: dict[str, dict[str, dict[str, list[float]]]]
    noise_ceiling: dict[str, dict[str, dict[str, list[float]]]]
    target_variance_share: dict[str, float]
    timings: dict[str, float]


def run_protocol(
    cache: ModelCache, tasks: Tasks, stages: Stages, *, config, progress: bool | None, desc: str
) -> Run:
    """The loop both protocols share: train (or load) a source per task and measure its transfer to
    every task with each seed (:func:`train_sources`), score every pair (``stages.score``; non-finite
    scores raise ``FloatingPointError``), judge every estimator against the mean over the seeds of each
    of ``stages.truths`` over the pairs of distinct tasks (:func:`judge`), and give each truth its
    noise ceiling (:func:`ceilings`), with ``config.num_bootstrap`` resamples and ``config.seed``."""
    sources, timings = train_sources(cache, tasks, stages, config=config, progress=progress, desc=desc)
    runs = {key: transfer_runs(sources, key) for key in stages.truths}
    actual = {key: r.mean(axis=0) for key, r in runs.items()}
    mask = pairs_mask(len(sources))
    t0 = time.perf_counter()
    scores, scored = stages.score(sources)
    timings["scoring"] = time.perf_counter() - t0
    check_finite(scores, stages.name)
    t0 = time.perf_counter()
    boot = {"num_bootstrap": config.num_bootstrap, "seed": config.seed}
    evaluation = judge(scores, actual, mask=mask, **boot)
    ceiling = ceilings(runs, mask=mask, **boot)
    timings["evaluation"] = time.perf_counter() - t0
    shares = {key: target_variance_share(v, mask) for key, v in actual.items()}
    return Run(sources, actual, runs, mask, scores, scored, evaluation, ceiling, shares, timings)


def environment() -> dict[str, str]:
    """The machine and the jax a run measured on: versions, device, platform, CPUs and the date."""
    return {
        "jax": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "date": time.strftime("%Y-%m-%d"),
    }


def _git(*args: str) -> str | None:
    """``git <args>``'s stripped output in the package's folder; None when git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The code that produced a result: the jaxtransfer version and the git commit it was run from.

    Returns:
      ``{"jaxtransfer": version, "commit": sha or "unknown", "dirty": bool or
      "unknown"}``. The commit is ``git rev-parse HEAD`` of the checkout that
      holds this package (an installed copy outside a checkout, or a machine
      without git, gives "unknown"; this never raises). ``dirty`` is whether
      tracked files differ from that commit, so a report written from a
      modified tree says so.
    """
    try:  # the installed distribution's version (the package's __init__ is a layer above the apps)
        version = importlib.metadata.version("jaxtransfer")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    inside = _git("ls-files", "--error-unmatch", Path(__file__).name)  # tracked here, not a stray checkout
    commit = _git("rev-parse", "HEAD") if inside is not None else None
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "jaxtransfer": version,
        "commit": commit or "unknown",
        "dirty": bool(status) if status is not None else "unknown",
    }


DEFAULT_SEEDS = 3
"""Seeds of the transfer runs of a full run (``--seeds``); ``--quick`` runs one."""


def command(protocol: str, quick: bool, seeds: int | None = None) -> str:
    """The command that runs ``protocol`` with these sizes and ``seeds`` transfer seeds (named only when
    they differ from the default: 1 with ``--quick``, :data:`DEFAULT_SEEDS` without); the output folder
    and cache aside."""
    line = f"jaxtransfer reproduce {protocol}" + (" --quick" if quick else "")
    default = 1 if quick else DEFAULT_SEEDS
    return line + (f" --seeds {seeds}" if seeds is not None and seeds != default else "")


def protocol_header(protocol: str, config, quick: bool) -> dict:
    """The first entries of every ``results.json``: the protocol, the command and configuration that
    ran it (sizes, epochs, seed, seeds of the transfer runs), the code version (:func:`code_version`)
    and the machine."""
    return {
        "protocol": protocol,
        "command": command(protocol, quick, config.seeds),
        "config": asdict(config),
        "quick": quick,
        "code": code_version(),
        "environment": environment(),
    }


def pair_scatter(
    path: Path,
    scores: dict[str, np.ndarray],
    actual: np.ndarray,
    target_names: list[str],
    *,
    ylabel: str,
    title: str,
) -> Path:
    """:func:`~jaxtransfer.apps._report.scatter_grid` of the pairs of distinct tasks of [S, S] matrices
    (a task's pair with itself is NaN, which is not drawn)."""
    keep = pairs_mask(np.shape(actual)[0])
    pairs = {name: np.where(keep, mat, np.nan) for name, mat in scores.items()}
    return scatter_grid(path, pairs, np.where(keep, actual, np.nan), target_names, ylabel=ylabel, title=title)


def generated_by(results: dict) -> str:
    """The report's line that names the command which wrote it and the code version it ran."""
    code = results["code"]
    commit = code["commit"] if code["commit"] == "unknown" else code["commit"][:12]
    state = {True: ", with uncommitted changes", False: "", "unknown": ""}[code["dirty"]]
    n = results["config"].get("seeds", 1)
    seeds = f", {n} transfer seeds" if n > 1 else ""
    return (
        f"Generated by `{results['command']}` (jaxtransfer {code['jaxtransfer']}, commit {commit}{state}; "
        f"seed {results['config']['seed']}{seeds}); do not edit by hand."
    )


def machine(results: dict) -> str:
    """``Machine: … Wall time … s`` from ``results``' environment and wall time (no closing stop)."""
    env = results["environment"]
    return (
        f"Machine: {env['device']} ({env['platform']}, {env['cpus']} CPUs), jax {env['jax']}, {env['date']}. "
        f"Wall time {results['wall_time_s']:.0f} s"
    )


def cache_note(record: dict) -> str:
    """How many source models and transfer results of ``record`` came from the cache."""
    return (
        f"{record['cached_models']} source models and {record['cached_transfer_results']} sources' transfer "
        "results came from the cache (cached transfer results carry the times measured when they were "
        "computed; a cached model's training time is not counted)."
    )


def stage_times(timings: Mapping[str, float]) -> str:
    """``Stage times (s): …``, one entry per stage (no closing stop)."""
    return "Stage times (s): " + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in timings.items())


def variance_share_line(shares: Mapping[str, float]) -> str:
    """The report's sentence on the share of the variance of actual transfer the target alone explains."""
    return (
        "Share of the variance of actual transfer (off-diagonal pairs) explained by the target alone: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in shares.items())
        + "."
    )
