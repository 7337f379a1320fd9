"""Keypoint regression (Nguyen et al., UAI 2023), reproduced offline: ``jaxtransfer reproduce keypoints``.

The paper's setting: each keypoint of a bird (CUB-200, 15) or a monkey
(OpenMonkey, 17) is a 2-D regression task; a model trained on one keypoint is
transferred to another by head retraining, by fine-tuning half the network and
by fine-tuning all of it; Linear MSE (a ridge map from the source features)
and Label MSE (from the source's predicted points) predict the transfer better
and faster than LogME and TransRate.

Here the images are rendered sprites (:mod:`jaxtransfer.sprites`, 64×64)
with 9 named keypoints (centre and eight compass points of the sprite's own
frame). With a fixed half/half split:

1. a CoordConv :class:`jaxtransfer.models.SmallCNN` is trained per keypoint
   (MSE on coordinates in units of the image side, AdamW, fixed seeds; cached
   on disk);
2. actual transfer to every other keypoint = −test MSE after head retraining
   (exact ridge on the frozen features), after fine-tuning the last conv stage,
   the dense layer and a new head ("half"), and after fine-tuning everything
   ("full") — each source's targets as one vmapped run, with ``seeds`` seeds
   (the truth is their mean, their agreement the noise ceiling);
3. every pair is scored on the train half with Linear MSE and Label MSE at
   λ = 0 and λ = 1, their held-out variants (``heldout_linear_mse``,
   ``heldout_label_mse``, when registered), LogME and TransRate on the features and on the predicted
   points (TransRate cuts each output dimension into quantile bins, as the
   paper did), and a "target only" baseline −tr Cov(y_target); the
   classification-only estimators (H-score, GBC, LEEP, NCE, NLEEP) do not apply;
4. each estimator's time per pair, all pairs in one :func:`score_matrix` call
   and one pair per call, medians over repeats after a warm-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ... import estimators as jt
from ... import transfer
from ...datasets import KEYPOINT_NAMES, render
from .._report import cell, markdown_table, summary_bars, write_report
from ._common import (
    DEFAULT_SEEDS,
    INTERVAL_NOTE,
    ModelCache,
    Source,
    Stages,
    Tasks,
    cache_note,
    ceiling_note,
    check_seeds,
    generated_by,
    machine,
    pair_scatter,
    protocol_header,
    run_protocol,
    stage_times,
    variance_share_line,
)

__all__ = ["KeypointConfig", "run_keypoints"]


@dataclass(frozen=True)
class KeypointConfig:
    """Sizes and training of the keypoint protocol (the full run's defaults)."""

    samples: int = 3000
    size: int = 64
    keypoints: int = 9
    channels: tuple[int, ...] = (16, 32, 64)
    source_epochs: int = 15
    fine_tune_epochs: int = 4
    batch_size: int = 64
    learning_rate: float = 2e-3
    fine_tune_learning_rate: float = 1e-3
    fine_tune_target_batch: int | None = 1  # one target at a time: faster on CPUs; same results
    transrate_bins: int = 5
    seed: int = 0
    seeds: int = DEFAULT_SEEDS  # transfer runs per pair, seeds seed, seed + 1, …
    num_bootstrap: int = 1000
    timing_repeats: int = 5


QUICK = KeypointConfig(
    samples=160,
    size=32,
    keypoints=3,
    channels=(8, 16),
    source_epochs=1,
    fine_tune_epochs=1,
    seeds=1,
    num_bootstrap=20,
    timing_repeats=1,
)

_NAMES = {
    "linear_mse_l0": "Linear MSE λ=0",
    "linear_mse_l1": "Linear MSE λ=1",
    "label_mse_l0": "Label MSE λ=0",
    "label_mse_l1": "Label MSE λ=1",
    "heldout_linear_mse": "held-out Linear MSE",
    "heldout_label_mse": "held-out Label MSE",
    "logme_features": "LogME (features)",
    "logme_labels": "LogME (predicted points)",
    "transrate_features": "TransRate (features)",
    "transrate_labels": "TransRate (predicted points)",
    "target_only": "target only: −tr Cov(y)",
}

# The protocol's variants: name -> (registered estimator, source input, options). The paper's
# estimators take their own source input (``info.source``: features for Linear MSE, predicted points
# for Label MSE) at λ = 0 and 1, and so do their held-out variants (with the registry's default
# options; left out while they are not registered); LogME and TransRate are scored on both inputs.
_VARIANTS = {
    "linear_mse_l0": ("linear_mse", None, {"l2": 0.0}),
    "linear_mse_l1": ("linear_mse", None, {"l2": 1.0}),
    "label_mse_l0": ("label_mse", None, {"l2": 0.0}),
    "label_mse_l1": ("label_mse", None, {"l2": 1.0}),
    "heldout_linear_mse": ("heldout_linear_mse", None, {}),
    "heldout_label_mse": ("heldout_label_mse", None, {}),
    "logme_features": ("logme", "features", {}),
    "logme_labels": ("logme", "predictions", {}),
    "transrate_features": ("transrate", "features", {}),
    "transrate_labels": ("transrate", "predictions", {}),
}

# Per source: the seconds ``_measure`` reports, and the stage each is added to.
_STAGE_SECONDS = {
    "head_seconds": "head_retraining",
    "fine_tune_half_seconds": "fine_tuning_half",
    "fine_tune_full_seconds": "fine_tuning_full",
}

_TRUTHS = {
    "head": "head retraining",
    "fine_tune_half": "half fine-tuning",
    "fine_tune_full": "full fine-tuning",
}


def _estimators(config: KeypointConfig):
    """name -> (estimator, which source input, options), from :data:`_VARIANTS` and the registry.

    A classification estimator that also takes real targets (``task`` among its
    options) is asked for regression; one that bins real targets (``bins``)
    gets :attr:`KeypointConfig.transrate_bins`; a PRNG key where one is taken.
    """
    out = {}
    registered = set(jt.available_estimators())
    for name, (est, kind, variant) in _VARIANTS.items():
        if est not in registered:
            continue
        fn = jt.get_estimator(est)
        info = fn.info
        options = info.caller_options(seed=config.seed)
        if info.task != "regression" and "task" in info.options:
            options["task"] = "regression"
        if "bins" in info.options:
            options["bins"] = config.transrate_bins
        out[name] = (fn, kind or info.source, options | variant)
    return out


def _half_filter(model):
    """The last conv stage, the dense layer and the head: "half" fine-tuning's trainable variables."""
    last = len(model.convs) - 1

    def last_conv(path, _):
        return len(path) > 1 and path[0] == "convs" and path[1] == last

    return nnx.All(nnx.Param, nnx.Any(nnx.PathContains("dense"), nnx.PathContains("head"), last_conv))


def _median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compiles)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _keypoint_tasks(config: KeypointConfig) -> Tasks:
    """Rendered sprites and their first ``config.keypoints`` keypoints, each a 2-D regression task
    ([K, n, 2] coordinates in units of the image side), with the train half."""
    if not 2 <= config.keypoints <= len(KEYPOINT_NAMES):
        raise ValueError(f"keypoints must be in [2, {len(KEYPOINT_NAMES)}], got {config.keypoints}")
    data = render(config.samples, size=config.size, seed=config.seed)
    k = config.keypoints
    y = np.moveaxis(data.keypoints[:, :k] / config.size, 1, 0).astype(np.float32)  # [K, n, 2]
    train = transfer.split_mask(data.images.shape[0], seed=config.seed)
    return Tasks(data.images, y, list(KEYPOINT_NAMES[:k]), [2] * k, train)


def _stages(config: KeypointConfig, tasks: Tasks) -> Stages:
    """The keypoint protocol's parts of :func:`run_protocol`."""
    arch = dict(in_channels=3, channels=tuple(config.channels), hidden=64, coords=True, stem_stride=2)
    transfer_key = {
        "keypoints": len(tasks.names), "epochs": config.fine_tune_epochs,
        "learning_rate": config.fine_tune_learning_rate, "batch_size": config.batch_size,
    }  # fmt: skip
    measure, score = _measure(config, tasks), _score(config, tasks)
    return Stages("keypoints", arch, measure, transfer_key, _STAGE_SECONDS, tuple(_TRUTHS), score)


def _source_key(config: KeypointConfig, arch: dict) -> dict:
    """What the source models depend on: their cache folder's key."""
    return {
        "samples": config.samples, "size": config.size, "arch": arch, "seed": config.seed,
        "epochs": config.source_epochs, "batch_size": config.batch_size, "lr": config.learning_rate,
    }  # fmt: skip


def _measure(config: KeypointConfig, tasks: Tasks):
    """``measure(model, outputs, seed)`` for :func:`run_protocol`: −test MSE on every keypoint after
    head retraining (exact ridge: the seed does not enter) and after half and full fine-tuning with
    ``seed`` (the new head's initialisation and the batches), with the seconds each took."""
    x, y, train = tasks.images, tasks.targets, tasks.train

    def measure(model, outputs, seed):
        f = np.asarray(outputs.features)
        t0 = time.perf_counter()
        out = {"head": -transfer.head_retrain(f, y, train_mask=train, task="regression").mse}
        out["head_seconds"] = time.perf_counter() - t0
        for mode, trainable in (("half", _half_filter(model)), ("full", "all")):
            t0 = time.perf_counter()
            _, res = transfer.fine_tune_many(
                model, x, y, train_mask=train, trainable=trainable, epochs=config.fine_tune_epochs,
                batch_size=config.batch_size, learning_rate=config.fine_tune_learning_rate,
                seed=seed, target_batch=config.fine_tune_target_batch, progress=False,
            )  # fmt: skip
            out[f"fine_tune_{mode}"] = -res.mse
            out[f"fine_tune_{mode}_seconds"] = time.perf_counter() - t0
        return out

    return measure


def _score(config: KeypointConfig, tasks: Tasks):
    """``score(sources)`` for :func:`run_protocol`: every variant's [K, K] scores on the train half and
    the target-only baseline −tr Cov(y_target), with each variant's time per pair."""
    train, k = tasks.train, len(tasks.names)
    y_train = tasks.targets[:, train]

    def score(sources: list[Source]):
        inputs = {
            "features": np.stack([np.asarray(src.outputs.features) for src in sources])[:, train],
            "predictions": np.stack([np.asarray(src.outputs.logits) for src in sources])[:, train],
        }
        scores, per_pair = {}, {}
        for name, (fn, kind, options) in _estimators(config).items():
            scores[name] = np.asarray(jt.score_matrix(fn, inputs[kind], y_train, **options))
            per_pair[name] = _time_per_pair(fn, inputs[kind], y_train, options, config.timing_repeats)
        total_var = np.trace(np.stack([np.cov(v.T) for v in y_train]), axis1=1, axis2=2)
        scores["target_only"] = np.broadcast_to(-total_var[None, :], (k, k)).copy()
        return scores, per_pair

    return score


def _time_per_pair(fn, src: np.ndarray, y: np.ndarray, options: dict, repeats: int) -> dict[str, float]:
    """Milliseconds per pair of ``fn`` on sources ``src`` [S, ...] and targets ``y`` [T, ...]: all
    pairs in one :func:`score_matrix` call, and one pair per call (medians after a warm-up)."""
    pairs = src.shape[0] * y.shape[0]
    batched = _median_time(lambda: jt.score_matrix(fn, src, y, **options), repeats)
    single = _median_time(lambda: [fn(s_i, y_j, **options) for s_i in src for y_j in y], repeats)
    return {"batched_ms": 1e3 * batched / pairs, "one_pair_ms": 1e3 * single / pairs}


def _own_mse(sources: list[Source], tasks: Tasks) -> np.ndarray:
    """[K]: each source model's test MSE on its own keypoint."""
    test = ~tasks.train
    errors = [np.asarray(src.outputs.logits)[test] - tasks.targets[s, test] for s, src in enumerate(sources)]
    return np.array([np.mean(e**2) for e in errors], dtype=np.float64)


def run_keypoints(
    out: str | Path,
    *,
    quick: bool = False,
    cache: str | Path | None = None,
    progress: bool | None = None,
    print_fn=print,
    config: KeypointConfig | None = None,
    seeds: int | None = None,
) -> dict:
    """Run the keypoint protocol and write ``out/keypoints/{results.json, report.md, *.png}``.

    Args:
      out: the results folder (``bench/results/quality`` for the committed report).
      quick: the smoke-test sizes (:data:`QUICK`), one seed.
      seeds: transfer runs per pair (seeds ``config.seed`` …), overriding the configuration's
        (default 3, 1 with ``quick``); the truth is their mean, their agreement the noise ceiling.
      cache: where trained source models are kept (default
        ``$JAXTRANSFER_CACHE/reproduce`` or ``~/.cache/jaxtransfer/reproduce``).
      progress: progress bars (None: when stderr is a terminal).
      config: overrides the sizes entirely.

    Returns:
      the results as written to ``results.json``.

    Raises:
      ValueError: ``seeds`` is not an integer >= 1.
    """
    config = check_seeds(config or (QUICK if quick else KeypointConfig()), seeds)
    start = time.perf_counter()
    tasks = _keypoint_tasks(config)
    stages = _stages(config, tasks)
    model_cache = ModelCache(cache, "keypoints", _source_key(config, stages.arch))
    timings = {"data": time.perf_counter() - start}
    x, n, k = tasks.images, tasks.images.shape[0], len(tasks.names)
    print_fn(f"keypoints: {k} tasks on {n} sprites {x.shape[1:]}; models cached in {model_cache.folder}")
    run = run_protocol(model_cache, tasks, stages, config=config, progress=progress, desc="keypoint sources")
    results = protocol_header("keypoints", config, quick) | {
        "n": n,
        "image_shape": list(x.shape[1:]),
        "keypoints": tasks.names,
        "architecture": stages.arch,
        "units": "MSE of (x, y) in units of the image side, squared",
        "own_test_mse": _own_mse(run.sources, tasks),
        "actual": run.actual,
        "actual_runs": run.runs,
        "scores": run.scores,
        "evaluation": run.evaluation,
        "noise_ceiling": run.noise_ceiling,
        "target_variance_share": run.target_variance_share,
        "time_per_pair": run.scored,
        "timings_s": timings | run.timings,
        "cached_models": model_cache.hits,
        "cached_transfer_results": model_cache.result_hits,
        "wall_time_s": time.perf_counter() - start,
    }
    _write(Path(out) / "keypoints", results)
    return results


def _write(folder: Path, results: dict) -> None:
    """A scatter grid per kind of transfer, the summary bars against head retraining, the report."""
    folder.mkdir(parents=True, exist_ok=True)
    for truth in _TRUTHS:
        title = f"keypoints: estimator score vs −test MSE after {truth.replace('_', ' ')}"
        pair_scatter(
            folder / f"{truth}.png", results["scores"], results["actual"][truth], results["keypoints"],
            ylabel="−test MSE", title=title,
        )  # fmt: skip
    summary_bars(
        folder / "summary.png",
        results["evaluation"]["head"],
        title="keypoints: estimators vs head retraining (95% CI)",
        ceiling=results["noise_ceiling"].get("head", {}).get("ceiling"),
    )
    write_report(folder, results, _markdown(results))


def _markdown(r: dict) -> str:
    cfg = r["config"]
    lines = [
        "# Keypoint regression: do Linear MSE and Label MSE predict transfer?",
        "",
        generated_by(r),
        machine(r) + "; " + cache_note(r),
        "",
        f"Protocol (Nguyen et al., UAI 2023, on offline data): {r['n']} rendered sprites "
        f"{tuple(r['image_shape'])}, {len(r['keypoints'])} keypoint tasks ("
        + ", ".join(f"`{k}`" for k in r["keypoints"])
        + "), each a 2-D regression task. A CoordConv CNN "
        f"(channels {tuple(cfg['channels'])}) is trained per keypoint ({cfg['source_epochs']} epochs) and "
        "transferred to every *other* keypoint by head retraining (ridge), by fine-tuning the last conv "
        f"stage + dense layer + new head (half) and everything (full), {cfg['fine_tune_epochs']} epochs. "
        "Actual transfer is −test MSE (coordinates in units of the image side). Estimators use the train "
        "half; TransRate cuts each output dimension into "
        f"{cfg['transrate_bins']} quantile bins. Pooled statistics run over all pairs, within statistics "
        "over the sources of each target, averaged over targets; Kendall's τ within target is the "
        "headline (robust to outlying pairs; what model-selection papers compare). 95% percentile "
        f"bootstrap intervals resample sources ({cfg['num_bootstrap']} resamples). "
        + ceiling_note(cfg["seeds"])
        + " The target-only baseline ignores the source. "
        + INTERVAL_NOTE,
        "",
        "Own test MSE of each source model on its keypoint: "
        + ", ".join(f"{k} {v:.4f}" for k, v in zip(r["keypoints"], r["own_test_mse"], strict=True))
        + ".",
        stage_times(r["timings_s"]) + ".",
        "",
        variance_share_line(r["target_variance_share"]),
    ]
    seeds = len(next(iter(r["actual_runs"].values())))
    for truth, label in _TRUTHS.items():
        ceiling = r["noise_ceiling"].get(truth)
        table = markdown_table(r["evaluation"][truth], _NAMES, ceiling=ceiling, seeds=seeds)
        lines += ["", f"## Against {label}", "", table]
    lines += _time_table(r)
    lines += ["", "![scores vs head retraining](head.png)", "", "![summary](summary.png)", ""]
    lines += ["## Verdicts, computed from the tables above", ""]
    lines += [_verdict(truth, r["evaluation"][truth], r["noise_ceiling"].get(truth)) for truth in _TRUTHS]
    return "\n".join(lines) + "\n"


def _time_table(r: dict) -> list[str]:
    """The Markdown section of each estimator's time per pair, batched and one pair per call."""
    k, cfg = len(r["keypoints"]), r["config"]
    lines = [
        "",
        f"## Time per pair ({k}×{k} pairs, median of {cfg['timing_repeats']} after a warm-up)",
        "",
        "| estimator | all pairs in one call (ms/pair) | one pair per call (ms/pair) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, t in r["time_per_pair"].items():
        lines.append(
            f"| {_NAMES[name]} | {t['batched_ms']:.3f} | {t['one_pair_ms']:.3f} | "
            f"{t['one_pair_ms'] / t['batched_ms']:.1f}× |"
        )
    return lines


def _verdict(truth: str, ev: dict, ceiling: dict | None) -> str:
    """The best of Linear/Label MSE (and their held-out variants) and the best of LogME/TransRate by
    within-target Kendall τ, with Spearman beside it, the noise ceiling and the target-only baseline."""

    def best(names):
        return max(
            (e for e in names if e in ev), key=lambda e: np.nan_to_num(ev[e]["kendall_within"][0], nan=-2)
        )

    best_seed = best(
        (
            "linear_mse_l0",
            "linear_mse_l1",
            "label_mse_l0",
            "label_mse_l1",
            "heldout_linear_mse",
            "heldout_label_mse",
        )
    )
    best_other = best(("logme_features", "logme_labels", "transrate_features", "transrate_labels"))
    a, b = ev[best_seed], ev[best_other]
    bound = ""
    if ceiling and "ceiling" in ceiling:
        bound = f"; noise ceiling {cell(ceiling['ceiling']['kendall_within'])}"
    return (
        f"- {truth.replace('_', ' ')}: best of Linear/Label MSE by within-target Kendall τ is "
        f"{_NAMES[best_seed]} {cell(a['kendall_within'])} (Spearman {cell(a['spearman_within'])}, pooled "
        f"Pearson {cell(a['pearson_pooled'])}); best of LogME/TransRate is {_NAMES[best_other]} "
        f"{cell(b['kendall_within'])} (Spearman {cell(b['spearman_within'])}, pooled Pearson "
        f"{cell(b['pearson_pooled'])}){bound}; target-only pooled Pearson "
        f"{ev['target_only']['pearson_pooled'][0]:.2f}."
    )
