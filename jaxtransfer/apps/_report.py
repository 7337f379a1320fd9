"""What the apps write: text tables, JSON and CSV files, and plots of scores against actual transfer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .._io import check_output_folder
from ._rank import RankResult

__all__ = ["evaluation_table", "ranked_table", "write_outputs"]


def ranked_table(result: RankResult) -> str:
    """Sources ranked by actual transfer (or by the first estimator), with each estimator's mean rank."""
    ests = list(result.scores)
    s = len(result.sources)

    def mean_rank(mat):  # 1 = best for every target, averaged over targets; NaN for unscored sources
        order = np.argsort(np.argsort(-np.nan_to_num(mat, nan=-np.inf), axis=0), axis=0) + 1.0
        scored = ~np.isnan(mat).all(axis=1)
        out = np.full(s, np.nan)
        out[scored] = order[scored].mean(axis=1)
        return out

    key = result.actual.mean(axis=1) if result.actual is not None else -mean_rank(result.scores[ests[0]])
    rows = np.argsort(-key)
    width = max(len(n) for n in result.sources) + 2
    head = f"{'#':>2}  {'source':{width}s}" + ("  accuracy" if result.actual is not None else "")
    head += "".join(f" {e[:12]:>12s}" for e in ests)
    lines = [head, "-" * len(head)]
    ranks = {e: mean_rank(result.scores[e]) for e in ests}
    for place, i in enumerate(rows, 1):
        line = f"{place:2d}  {result.sources[i]:{width}s}"
        if result.actual is not None:
            line += f"  {result.actual[i].mean():8.4f}"
        line += "".join(f" {ranks[e][i]:12.2f}" if np.isfinite(ranks[e][i]) else f" {'—':>12s}" for e in ests)
        lines.append(line)
    lines.append("(estimator columns: mean rank of the source over the target tasks, 1 = picked first)")
    for est, by_source in result.not_computed.items():  # — in the table, NaN in the files
        for why in dict.fromkeys(by_source.values()):
            listed = ", ".join(s for s, w in by_source.items() if w == why)
            lines.append(f"— {est} not computed for {listed}: {why}")
    return "\n".join(lines)


def evaluation_table(result: RankResult) -> str:
    """Each estimator's correlations with actual transfer, pooled and within target, with intervals."""
    if not result.evaluation:
        return "(no evaluation: needs ground truth and at least two sources with every estimator's scores)"
    cols = ("pearson_pooled", "spearman_pooled", "pearson_within", "spearman_within", "kendall_within",
            "weighted_tau_within", "top1_hit", "regret")  # fmt: skip
    head = f"{'estimator':18s}" + "".join(f" {c:>22s}" for c in cols)
    lines = [head, "-" * len(head)]
    for est, stats in result.evaluation.items():
        cells = "".join(f" {stats[c][0]:6.3f} [{stats[c][1]:6.3f},{stats[c][2]:6.3f}]" for c in cols)
        lines.append(f"{est:18s}{cells}")
    missing = [e for e in result.scores if e not in result.evaluation]
    if missing:
        lines.append(f"not evaluated (fewer than two sources with finite scores): {', '.join(missing)}")
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_outputs(result: RankResult, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``scores.json``, ``scores.csv``, ``evaluation.json``, ``evaluation.csv`` and PNG plots.

    Every file is written to a temporary name and renamed when complete.

    Raises:
      ValueError: ``out`` is an existing file, or cannot be created.
    """
    out = check_output_folder(out, what="out")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    doc = {
        "sources": result.sources,
        "targets": result.targets,
        "scores": {e: m.tolist() for e, m in result.scores.items()},
        "actual_accuracy": None if result.actual is None else result.actual.tolist(),
        "actual_log_likelihood": None if result.log_likelihood is None else result.log_likelihood.tolist(),
        "not_computed": result.not_computed,
        "timings_s": result.timings,
    }
    _write_text(out / "scores.json", json.dumps(doc, indent=1, allow_nan=True))
    written.append(out / "scores.json")
    rows = []
    for i, s in enumerate(result.sources):
        for j, t in enumerate(result.targets):
            row = {"source": s, "target": t}
            if result.actual is not None:
                row["actual_accuracy"] = result.actual[i, j]
                row["actual_log_likelihood"] = result.log_likelihood[i, j]
            row.update({e: m[i, j] for e, m in result.scores.items()})
            rows.append(row)
    _write_csv(out / "scores.csv", rows)
    written.append(out / "scores.csv")
    _write_text(out / "evaluation.json", json.dumps(result.evaluation, indent=1, allow_nan=True))
    written.append(out / "evaluation.json")
    erows = [
        {"estimator": e, "statistic": k, "value": v[0], "low": v[1], "high": v[2]}
        for e, stats in result.evaluation.items()
        for k, v in stats.items()
    ]
    _write_csv(out / "evaluation.csv", erows)
    written.append(out / "evaluation.csv")
    if plots and result.actual is not None:
        written += _plots(result, out)
    return written


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(path)


def _plots(result: RankResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    cmap = plt.get_cmap("tab20")
    for est, mat in result.scores.items():
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        for j, target in enumerate(result.targets):
            ok = ~np.isnan(mat[:, j])
            ax.plot(mat[ok, j], result.actual[ok, j], "o", ms=4, color=cmap(j % 20), label=target)
        stats = result.evaluation.get(est)
        title = est
        if stats:
            title += (
                f"   pooled Pearson {stats['pearson_pooled'][0]:.2f}, "
                f"within-target Spearman {stats['spearman_within'][0]:.2f}"
            )
        ax.set(xlabel=f"{est} score", ylabel="test accuracy after head retraining", title=title)
        ax.title.set_fontsize(9)
        if len(result.targets) <= 20:
            ax.legend(fontsize=6, ncol=2, loc="best")
        fig.tight_layout()
        path = out / f"{est}.png"
        tmp = out / f".{est}.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(path)
        paths.append(path)
    if result.evaluation:
        ests = list(result.evaluation)
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        x = np.arange(len(ests))
        for offset, (stat, label) in enumerate(
            (("pearson_pooled", "Pearson, pooled"), ("spearman_within", "Spearman, within target"))
        ):
            vals = np.array([result.evaluation[e][stat] for e in ests])
            err = np.abs(vals[:, 1:].T - vals[:, 0])
            ax.bar(x + (offset - 0.5) * 0.38, vals[:, 0], 0.38, yerr=err, capsize=3, label=label)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(x, ests, rotation=30, ha="right")
        ax.set(
            ylabel="correlation with actual transfer", title="estimators vs head-retraining accuracy (95% CI)"
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        tmp = out / ".summary.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        tmp.replace(out / "summary.png")
        paths.append(out / "summary.png")
    return paths
