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
   ("full") — each source's targets as one vmapped run;
3. every pair is scored on the train half with Linear MSE and Label MSE at
   λ = 0 and λ = 1, LogME and TransRate on the features and on the predicted
   points (TransRate cuts each output dimension into quantile bins, as the
   paper did), and a "target only" baseline −tr Cov(y_target); the
   classification-only estimators (H-score, GBC, LEEP, NCE, NLEEP) do not apply;
4. each estimator's time per pair, all pairs in one :func:`score_matrix` call
   and one pair per call, medians over repeats after a warm-up.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from ... import estimators as jt
from ... import features, transfer
from ..._progress import progress_bar
from ...datasets import KEYPOINT_NAMES, render
from ._common import (
    INTERVAL_NOTE,
    ModelCache,
    cell,
    environment,
    judge,
    markdown_table,
    off_diagonal,
    scatter_grid,
    source_model,
    summary_bars,
    target_variance_share,
    write_report,
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
    num_bootstrap: int = 1000
    timing_repeats: int = 5


QUICK = KeypointConfig(
    samples=160,
    size=32,
    keypoints=3,
    channels=(8, 16),
    source_epochs=1,
    fine_tune_epochs=1,
    num_bootstrap=20,
    timing_repeats=1,
)

_NAMES = {
    "linear_mse_l0": "Linear MSE λ=0",
    "linear_mse_l1": "Linear MSE λ=1",
    "label_mse_l0": "Label MSE λ=0",
    "label_mse_l1": "Label MSE λ=1",
    "logme_features": "LogME (features)",
    "logme_labels": "LogME (predicted points)",
    "transrate_features": "TransRate (features)",
    "transrate_labels": "TransRate (predicted points)",
    "target_only": "target only: −tr Cov(y)",
}


def _estimators(config: KeypointConfig):
    """name -> (estimator, which source input, options)."""
    bins = config.transrate_bins
    return {
        "linear_mse_l0": (jt.linear_mse, "features", {"l2": 0.0}),
        "linear_mse_l1": (jt.linear_mse, "features", {"l2": 1.0}),
        "label_mse_l0": (jt.label_mse, "predictions", {"l2": 0.0}),
        "label_mse_l1": (jt.label_mse, "predictions", {"l2": 1.0}),
        "logme_features": (jt.logme, "features", {"task": "regression"}),
        "logme_labels": (jt.logme, "predictions", {"task": "regression"}),
        "transrate_features": (jt.transrate, "features", {"task": "regression", "bins": bins}),
        "transrate_labels": (jt.transrate, "predictions", {"task": "regression", "bins": bins}),
    }


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


def run_keypoints(
    out: str | Path,
    *,
    quick: bool = False,
    cache: str | Path | None = None,
    progress: bool | None = None,
    print_fn=print,
    config: KeypointConfig | None = None,
) -> dict:
    """Run the keypoint protocol and write ``out/keypoints/{results.json, report.md, *.png}``.

    Args:
      out: the results folder (``bench/results/quality`` for the committed report).
      quick: the smoke-test sizes (:data:`QUICK`).
      cache: where trained source models are kept (default
        ``$JAXTRANSFER_CACHE/reproduce`` or ``~/.cache/jaxtransfer/reproduce``).
      progress: progress bars (None: when stderr is a terminal).
      config: overrides the sizes entirely.

    Returns:
      the results as written to ``results.json``.
    """

    config = config or (QUICK if quick else KeypointConfig())
    if not 2 <= config.keypoints <= len(KEYPOINT_NAMES):
        raise ValueError(f"keypoints must be in [2, {len(KEYPOINT_NAMES)}], got {config.keypoints}")
    start = time.perf_counter()
    timings = dict(
        data=0.0,
        source_training=0.0,
        head_retraining=0.0,
        fine_tuning_half=0.0,
        fine_tuning_full=0.0,
        scoring=0.0,
    )
    t0 = time.perf_counter()
    data = render(config.samples, size=config.size, seed=config.seed)
    x = data.images
    k = config.keypoints
    names = list(KEYPOINT_NAMES[:k])
    y = np.moveaxis(data.keypoints[:, :k] / config.size, 1, 0).astype(np.float32)  # [K, n, 2]
    n = x.shape[0]
    train = transfer.split_mask(n, seed=config.seed)
    arch = dict(in_channels=3, channels=tuple(config.channels), hidden=64, coords=True, stem_stride=2)
    source_key = {
        "samples": config.samples, "size": config.size, "arch": arch, "seed": config.seed,
        "epochs": config.source_epochs, "batch_size": config.batch_size, "lr": config.learning_rate,
    }  # fmt: skip
    cache_obj = ModelCache(cache, "keypoints", source_key)
    transfer_key = {
        "keypoints": k, "epochs": config.fine_tune_epochs, "learning_rate": config.fine_tune_learning_rate,
        "batch_size": config.batch_size,
    }  # fmt: skip
    timings["data"] = time.perf_counter() - t0
    print_fn(f"keypoints: {k} tasks on {n} sprites {x.shape[1:]}; models cached in {cache_obj.folder}")

    shape = (k, k)
    truths = {key: np.zeros(shape) for key in ("head", "fine_tune_half", "fine_tune_full")}
    own_mse = np.zeros(k)
    feats, preds = [], []
    bar = progress_bar(k, progress, "keypoint sources", unit="source")
    for s in range(k):
        t0 = time.perf_counter()
        model = source_model(
            cache_obj,
            f"{s:02d}-{names[s]}",
            2,
            arch,
            x[train],
            y[s, train],
            config=config,
            seed=config.seed + s,
        )
        out_s = features.extract(model, x, batch_size=256, progress=False)
        f, p = np.asarray(out_s.features), np.asarray(out_s.logits)
        feats.append(f)
        preds.append(p)
        own_mse[s] = np.mean((p[~train] - y[s, ~train]) ** 2)
        timings["source_training"] += time.perf_counter() - t0

        def measure(model=model, f=f):
            t0 = time.perf_counter()
            out = {"head": -transfer.head_retrain(f, y, train_mask=train, task="regression").mse}
            out["head_seconds"] = time.perf_counter() - t0
            for mode, trainable in (("half", _half_filter(model)), ("full", "all")):
                t0 = time.perf_counter()
                _, res = transfer.fine_tune_many(
                    model, x, y, train_mask=train, trainable=trainable, epochs=config.fine_tune_epochs,
                    batch_size=config.batch_size, learning_rate=config.fine_tune_learning_rate,
                    seed=config.seed, target_batch=config.fine_tune_target_batch, progress=False,
                )  # fmt: skip
                out[f"fine_tune_{mode}"] = -res.mse
                out[f"fine_tune_{mode}_seconds"] = time.perf_counter() - t0
            return out

        got = cache_obj.get_or_compute(f"{s:02d}-{names[s]}-transfer", transfer_key, measure)
        for key in truths:
            truths[key][s] = got[key]
        timings["head_retraining"] += float(got["head_seconds"])
        timings["fine_tuning_half"] += float(got["fine_tune_half_seconds"])
        timings["fine_tuning_full"] += float(got["fine_tune_full_seconds"])
        bar.update(1)
    bar.close()

    t0 = time.perf_counter()
    inputs = {"features": np.stack(feats)[:, train], "predictions": np.stack(preds)[:, train]}
    y_train = y[:, train]
    scores, per_pair = {}, {}
    for name, (fn, kind, options) in _estimators(config).items():
        src = inputs[kind]
        scores[name] = np.asarray(jt.score_matrix(fn, src, y_train, **options))
        batched = _median_time(
            lambda fn=fn, src=src, o=options: jt.score_matrix(fn, src, y_train, **o), config.timing_repeats
        )

        def one_at_a_time(fn=fn, src=src, o=options):
            return [fn(src[i], y_train[j], **o) for i in range(k) for j in range(k)]

        single = _median_time(one_at_a_time, config.timing_repeats)
        per_pair[name] = {"batched_ms": 1e3 * batched / (k * k), "one_pair_ms": 1e3 * single / (k * k)}
    total_var = np.trace(np.stack([np.cov(v.T) for v in y_train]), axis1=1, axis2=2)
    scores["target_only"] = np.broadcast_to(-total_var[None, :], shape).copy()
    timings["scoring"] = time.perf_counter() - t0
    for key, v in scores.items():
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"keypoints: estimator {key} gave non-finite scores")

    t0 = time.perf_counter()
    judged = judge(scores, truths, num_bootstrap=config.num_bootstrap, seed=config.seed)
    timings["evaluation"] = time.perf_counter() - t0
    results = {
        "protocol": "keypoints",
        "config": asdict(config),
        "quick": quick,
        "environment": environment(),
        "n": n,
        "image_shape": list(x.shape[1:]),
        "keypoints": names,
        "architecture": arch,
        "units": "MSE of (x, y) in units of the image side, squared",
        "own_test_mse": own_mse,
        "actual": truths,
        "scores": scores,
        "evaluation": judged,
        "target_variance_share": {key: target_variance_share(off_diagonal(v)) for key, v in truths.items()},
        "time_per_pair": per_pair,
        "timings_s": timings,
        "cached_models": cache_obj.hits,
        "cached_transfer_results": cache_obj.result_hits,
        "wall_time_s": time.perf_counter() - start,
    }
    folder = Path(out) / "keypoints"
    folder.mkdir(parents=True, exist_ok=True)
    for truth in truths:
        scatter_grid(
            folder / f"{truth}.png",
            scores,
            truths[truth],
            names,
            "−test MSE",
            f"keypoints: estimator score vs −test MSE after {truth.replace('_', ' ')}",
        )
    summary_bars(folder / "summary.png", judged["head"], "keypoints: estimators vs head retraining (95% CI)")
    write_report(folder, results, _markdown(results))
    return results


def _markdown(r: dict) -> str:
    cfg, env = r["config"], r["environment"]
    lines = [
        "# Keypoint regression: do Linear MSE and Label MSE predict transfer?",
        "",
        "Generated by `jaxtransfer reproduce keypoints"
        + (" --quick" if r["quick"] else "")
        + "`; do not edit by hand.",
        f"Machine: {env['device']} ({env['platform']}, {env['cpus']} CPUs), jax {env['jax']}, {env['date']}. "
        f"Wall time {r['wall_time_s']:.0f} s; {r['cached_models']} source models and "
        f"{r['cached_transfer_results']} sources' transfer results came from the cache (cached transfer "
        "results carry the times measured when they were computed; a cached model's training time is not "
        "counted).",
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
        "over the sources of each target, averaged over targets; 95% percentile bootstrap intervals resample "
        f"sources ({cfg['num_bootstrap']} resamples). The target-only baseline ignores the source. "
        + INTERVAL_NOTE,
        "",
        "Own test MSE of each source model on its keypoint: "
        + ", ".join(f"{k} {v:.4f}" for k, v in zip(r["keypoints"], r["own_test_mse"], strict=True))
        + ".",
        "Stage times (s): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in r["timings_s"].items())
        + ".",
        "",
        "Share of the variance of actual transfer (off-diagonal pairs) explained by the target alone: "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in r["target_variance_share"].items())
        + ".",
    ]
    for truth, label in (
        ("head", "head retraining"),
        ("fine_tune_half", "half fine-tuning"),
        ("fine_tune_full", "full fine-tuning"),
    ):
        lines += ["", f"## Against {label}", "", markdown_table(r["evaluation"][truth], _NAMES)]
    lines += [
        "",
        f"## Time per pair ({len(r['keypoints'])}×{len(r['keypoints'])} pairs, median of "
        f"{cfg['timing_repeats']} after a warm-up)",
        "",
        "| estimator | all pairs in one call (ms/pair) | one pair per call (ms/pair) | speed-up |",
        "|---|---|---|---|",
    ]
    for name, t in r["time_per_pair"].items():
        lines.append(
            f"| {_NAMES[name]} | {t['batched_ms']:.3f} | {t['one_pair_ms']:.3f} | "
            f"{t['one_pair_ms'] / t['batched_ms']:.1f}× |"
        )
    lines += ["", "![scores vs head retraining](head.png)", "", "![summary](summary.png)", ""]
    lines += ["## Verdicts, computed from the tables above", ""]
    for truth in ("head", "fine_tune_half", "fine_tune_full"):
        ev = r["evaluation"][truth]
        best_seed = max(
            ("linear_mse_l0", "linear_mse_l1", "label_mse_l0", "label_mse_l1"),
            key=lambda e: ev[e]["pearson_pooled"][0],
        )
        best_other = max(
            ("logme_features", "logme_labels", "transrate_features", "transrate_labels"),
            key=lambda e: ev[e]["pearson_pooled"][0],
        )
        a, b = ev[best_seed], ev[best_other]
        lines.append(
            f"- {truth.replace('_', ' ')}: best of Linear/Label MSE by pooled Pearson is {_NAMES[best_seed]} "
            f"{cell(a['pearson_pooled'])} (within Spearman {cell(a['spearman_within'])}); best of "
            f"LogME/TransRate is {_NAMES[best_other]} {cell(b['pearson_pooled'])} (within Spearman "
            f"{cell(b['spearman_within'])}); target-only pooled Pearson "
            f"{ev['target_only']['pearson_pooled'][0]:.2f}."
        )
    return "\n".join(lines) + "\n"
