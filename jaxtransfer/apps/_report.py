"""What the apps write: text and Markdown tables, JSON and CSV files, plots of scores against actual transfer.

``rank``'s outputs (:func:`ranked_table`, :func:`evaluation_table`,
:func:`write_outputs`) and the pieces every report uses: Markdown tables of
evaluation statistics, ``results.json`` + ``report.md``, a grid of score
against actual transfer, and the bar chart of each estimator's within-target
Kendall τ and Spearman and pooled Pearson. Every file appears whole: it is written through
:func:`jaxtransfer._io.atomic_write` (figures are rendered in memory first).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import textwrap
from pathlib import Path

import numpy as np

from .._io import atomic_write, check_output_folder
from ._rank import RankResult

__all__ = [
    "CEILING_ROWS",
    "STAT_COLUMNS",
    "SUMMARY_STATS",
    "WIDTH",
    "answer_table",
    "cell",
    "compact_evaluation",
    "evaluation_table",
    "markdown_table",
    "ranked_table",
    "save_figure",
    "scatter_grid",
    "summary_bars",
    "wide_report",
    "write_outputs",
    "write_report",
]

STAT_COLUMNS = (
    ("kendall_within", "**Kendall τ within**"),
    ("spearman_within", "Spearman within"),
    ("pearson_within", "Pearson within"),
    ("weighted_tau_within", "weighted τ within"),
    ("top1_hit", "top-1 hit"),
    ("regret", "regret"),
    ("kendall_pooled", "Kendall pooled"),
    ("spearman_pooled", "Spearman pooled"),
    ("pearson_pooled", "Pearson pooled"),
    ("weighted_tau_pooled", "weighted τ pooled"),
)
"""The report tables' columns, the headline first: Kendall's τ within target (robust to outlying pairs,
what model-selection papers compare), then the other within-target figures, then the pooled ones."""

CEILING_ROWS = (
    ("between_seeds", "*noise ceiling: one seed's transfer vs another's*"),
    ("ceiling", "*noise ceiling: noise-free transfer vs the mean of {n} seeds*"),
)
"""The rows a report table adds below the estimators when the truth was measured with several seeds."""


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


WIDTH = 100
"""The compact answer's width in columns."""


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, the cut marked with …."""
    return text if len(text) <= width else text[: width - 1] + "…"


def answer_table(result: RankResult, width: int = WIDTH) -> str:
    """The answer, one line per target: the recommended source and how sure it is, in ``width`` columns.

    Columns: the target; the recommended source; ``sure``, the share of
    random subsamples of 80% of the images that keep the pick; ``agree``, the
    estimators whose first choice it is; the margin over the runner-up in the
    picking estimator's units; and, with ground truth, the source that
    transferred best (``= pick`` when the pick was right) and the regret.
    """
    if not result.picks:
        return "(no recommendation: the ranking estimator scored no source)"
    ground = result.actual is not None
    fixed = 2 + 5 + 2 + 5 + 2 + 9 + (2 + 7 if ground else 0)  # gaps and the numeric columns
    names_room = width - fixed
    t_width = min(max(len("target"), *(len(p.target) for p in result.picks)), max(10, names_room // 4))
    rest = names_room - t_width - 2
    s_width = rest // 2 if ground else rest
    head = f"{'target':{t_width}s}  {'recommended source':{s_width}s}  {'sure':>5s}  {'agree':>5s}"
    head += f"  {'margin':>9s}"
    if ground:
        head += f"  {'best by accuracy':{rest - s_width - 2}s}  {'regret':>7s}"
    lines = [head.rstrip(), "-" * min(width, len(head.rstrip()))]
    for p in result.picks:
        sure = "—" if not np.isfinite(p.support) else f"{100 * p.support:.0f}%"
        margin = "—" if not np.isfinite(p.margin) else f"{p.margin:9.3g}"
        line = (
            f"{_fit(p.target, t_width):{t_width}s}  {_fit(p.source, s_width):{s_width}s}  {sure:>5s}  "
            f"{f'{p.agree}/{p.voters}':>5s}  {margin:>9s}"
        )
        if ground:
            best = "= pick" if p.right else p.best
            line += f"  {_fit(best, rest - s_width - 2):{rest - s_width - 2}s}  {p.regret:7.4f}"
        lines.append(line.rstrip())
    lines += _answer_summary(result, width)
    return "\n".join(lines)


def _answer_summary(result: RankResult, width: int) -> list[str]:
    """What the answer's columns mean, which source is picked most, and how often the picks were right."""
    picks = result.picks
    counts: dict[str, int] = {}
    for p in picks:
        counts[p.source] = counts.get(p.source, 0) + 1
    top = max(counts, key=counts.get)
    lines = [
        "",
        f"Picked by {result.pick_by}; {top} is the pick for {counts[top]} of {len(picks)} targets.",
    ]
    if result.actual is not None:
        right = sum(bool(p.right) for p in picks)
        regret = np.mean([p.regret for p in picks])
        lines.append(
            f"The pick transferred best on {right} of {len(picks)} targets; mean regret {regret:.4f} "
            "(accuracy of the best source less the pick's)."
        )
    else:
        lines.append(f"No ground truth: the ranking is {result.pick_by}'s alone.")
    lines.append(
        "sure: share of random 80% subsamples of the images keeping the pick; agree: estimators whose "
        "first choice it is; margin: pick less runner-up, in the estimator's units."
    )
    return [part for line in lines for part in (textwrap.wrap(line, width) or [""])]


def compact_evaluation(result: RankResult) -> str:
    """Each estimator's within-target Spearman (with its interval), top-1 hit rate and regret, in 100
    columns; estimators by within-target Spearman, best first."""
    if not result.evaluation:
        return "(no evaluation: needs ground truth and at least two sources with every estimator's scores)"
    head = f"{'estimator':18s} {'within-target Spearman':>26s} {'top-1 hit':>10s} {'regret':>8s}"
    lines = [head, "-" * len(head)]
    order = sorted(
        result.evaluation, key=lambda e: -np.nan_to_num(result.evaluation[e]["spearman_within"][0])
    )
    for est in order:
        stats = result.evaluation[est]
        value, low, high = stats["spearman_within"]
        mark = " (picks)" if est == result.pick_by else ""
        lines.append(
            f"{_fit(est + mark, 18):18s} {f'{value:6.3f} [{low:6.3f}, {high:6.3f}]':>26s} "
            f"{stats['top1_hit'][0]:10.3f} {stats['regret'][0]:8.4f}"
        )
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


def wide_report(result: RankResult) -> str:
    """The answer, then the wide tables: sources by mean rank per estimator, and the full evaluation."""
    parts = [answer_table(result), ranked_table(result), evaluation_table(result)]
    return "\n\n".join(parts) + "\n"


def write_outputs(result: RankResult, out: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``scores.json``, ``scores.csv``, ``evaluation.json``, ``evaluation.csv``, ``picks.csv``,
    ``report.txt`` (the answer and the wide tables, :func:`wide_report`) and PNG plots.

    Every file is written to a temporary name and renamed when complete.

    Raises:
      ValueError: ``out`` is an existing file, or cannot be created.
    """
    out = check_output_folder(out, what="out")
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "sources": result.sources,
        "targets": result.targets,
        "scores": {e: m.tolist() for e, m in result.scores.items()},
        "actual_accuracy": None if result.actual is None else result.actual.tolist(),
        "actual_log_likelihood": None if result.log_likelihood is None else result.log_likelihood.tolist(),
        "not_computed": result.not_computed,
        "pick_by": result.pick_by,
        "picks": [dataclasses.asdict(p) for p in result.picks],
        "timings_s": result.timings,
    }
    erows = [
        {"estimator": e, "statistic": k, "value": v[0], "low": v[1], "high": v[2]}
        for e, stats in result.evaluation.items()
        for k, v in stats.items()
    ]
    written = [
        atomic_write(out / "scores.json", json.dumps(doc, indent=1, allow_nan=True)),
        atomic_write(out / "scores.csv", _csv_text(_score_rows(result))),
        atomic_write(out / "evaluation.json", json.dumps(result.evaluation, indent=1, allow_nan=True)),
        atomic_write(out / "evaluation.csv", _csv_text(erows)),
        atomic_write(out / "picks.csv", _csv_text([dataclasses.asdict(p) for p in result.picks])),
        atomic_write(out / "report.txt", wide_report(result)),
    ]
    if plots and result.actual is not None:
        written += [_score_plot(result, est, out / f"{est}.png") for est in result.scores]
        if result.evaluation:
            title = "estimators vs head-retraining accuracy (95% CI)"
            written.append(summary_bars(out / "summary.png", result.evaluation, title=title))
    return written


def _score_rows(result: RankResult) -> list[dict]:
    """One row per source–target pair: actual transfer (when measured) and every estimator's score."""
    rows = []
    for i, s in enumerate(result.sources):
        for j, t in enumerate(result.targets):
            row = {"source": s, "target": t}
            if result.actual is not None:
                row["actual_accuracy"] = result.actual[i, j]
                row["actual_log_likelihood"] = result.log_likelihood[i, j]
            row.update({e: m[i, j] for e, m in result.scores.items()})
            rows.append(row)
    return rows


def _csv_text(rows: list[dict]) -> str:
    """``rows`` as CSV with a header from the first row's keys; empty when there are no rows."""
    buf = io.StringIO(newline="")
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def _pyplot():
    """``matplotlib.pyplot`` on the Agg backend (matplotlib is optional and slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (rendered in memory, then written whole) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _pyplot().close(fig)
    return atomic_write(path, buf.getvalue())


UNITS = {
    "logme": "log evidence per sample, nats",
    "leep": "log expected empirical prediction, nats",
    "nleep": "log expected empirical prediction, nats",
    "nce": "−H(target | source label), nats",
    "hscore": "tr(cov⁻¹ · between-class cov), unitless",
    "shrinkage_hscore": "tr(cov⁻¹ · between-class cov), unitless",
    "transrate": "coding-rate difference, nats",
    "gbc": "−Σ Bhattacharyya coefficients, unitless",
    "linear_mse": "−(MSE + penalty) on one-hot labels",
    "label_mse": "−(MSE + penalty) on one-hot labels",
}
"""Each estimator's score, as the axis label of its plot says it."""

MARKERS = "os^vDPX*<>hpd8H"


def _score_plot(result: RankResult, est: str, path: Path) -> Path:
    """One estimator's scores against head-retraining accuracy: a marker per source, a colour per
    target, and a ring on the source the estimator picks for each target."""
    plt = _pyplot()
    mat = result.scores[est]
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    cmap = plt.get_cmap("tab20")
    picked = np.argmax(np.nan_to_num(mat, nan=-np.inf), axis=0)
    for i, source in enumerate(result.sources):
        marker = MARKERS[i % len(MARKERS)]
        ok = np.isfinite(mat[i])
        colours = [cmap(j % 20) for j in np.flatnonzero(ok)]
        ax.scatter(mat[i, ok], result.actual[i, ok], s=22, marker=marker, c=colours, linewidths=0)
        ax.scatter([], [], s=22, marker=marker, c="0.4", label=source)  # the legend's entry for the source
    cols = np.flatnonzero(np.isfinite(mat[picked, np.arange(mat.shape[1])]))
    ax.scatter(
        mat[picked[cols], cols], result.actual[picked[cols], cols], s=90, facecolors="none",
        edgecolors="k", linewidths=1.2, label=f"{est}'s pick for each target",
    )  # fmt: skip
    stats = result.evaluation.get(est)
    title = f"{est}: one point per source and target (colour: target)"
    if stats:
        title += (
            f"\npooled Pearson {stats['pearson_pooled'][0]:.2f}, "
            f"within-target Spearman {stats['spearman_within'][0]:.2f}"
        )
    ax.set(
        xlabel=f"{est} score ({UNITS.get(est, 'higher is better')})",
        ylabel="test accuracy after head retraining (fraction correct)",
        title=title,
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=6, loc="best", ncol=1 + len(result.sources) // 12)
    fig.tight_layout()
    return save_figure(fig, path)


SUMMARY_STATS = (
    ("kendall_within", "Kendall τ, within target"),
    ("spearman_within", "Spearman, within target"),
    ("pearson_pooled", "Pearson, pooled"),
)
"""The bars of :func:`summary_bars`, per estimator."""


def summary_bars(
    path: Path,
    evaluation: dict,
    *,
    title: str,
    ylabel: str = "correlation with actual transfer",
    ceiling: dict | None = None,
) -> Path:
    """Within-target Kendall τ and Spearman and pooled Pearson of each estimator, with their intervals,
    as a PNG.

    ``evaluation`` maps estimator -> statistic -> (value, low, high); an
    undefined (NaN) statistic is drawn as 0. ``ceiling`` (statistic ->
    (value, low, high), the noise ceiling of the truth) draws a dashed line
    at the ceiling of each statistic drawn, in its bar's colour.
    """
    plt = _pyplot()
    ests = list(evaluation)
    fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(ests) + 2), 4), dpi=90)
    x = np.arange(len(ests))
    width = 0.8 / len(SUMMARY_STATS)
    for offset, (stat, label) in enumerate(SUMMARY_STATS):
        vals = np.array([evaluation[e][stat] for e in ests], float)
        shown = np.nan_to_num(vals)
        err = np.abs(shown[:, 1:].T - shown[:, 0])
        pos = x + (offset - (len(SUMMARY_STATS) - 1) / 2) * width
        bars = ax.bar(pos, shown[:, 0], width, yerr=err, capsize=2, label=label)
        if ceiling and stat in ceiling and np.isfinite(ceiling[stat][0]):
            ax.axhline(ceiling[stat][0], color=bars.patches[0].get_facecolor(), lw=1, ls="--")
    if ceiling:
        ax.plot([], [], color="0.3", lw=1, ls="--", label="noise ceiling (mean of the seeds)")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(x, ests, rotation=35, ha="right", fontsize=7)
    ax.set(ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def scatter_grid(
    path: Path,
    scores: dict[str, np.ndarray],
    actual: np.ndarray,
    target_names: list[str],
    *,
    ylabel: str,
    title: str,
) -> Path:
    """A panel per estimator: score against actual transfer, a colour per target, as a PNG.

    ``scores`` maps estimator -> [S, T] and ``actual`` is [S, T]: column t
    holds the sources scored for target t (a protocol that leaves out the
    pairs of a task with itself passes the off-diagonal [S − 1, S] matrices).
    """
    plt = _pyplot()
    names = list(scores)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), dpi=90, squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, name in zip(axes.flat, names, strict=False):
        s = scores[name]
        for t in range(actual.shape[1]):
            ax.plot(s[:, t], actual[:, t], "o", ms=3, color=cmap(t % 20), label=target_names[t])
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_ylabel(ylabel, fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, ncol=min(10, len(labels)), loc="lower center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return save_figure(fig, path)


def cell(v) -> str:
    """``(value, low, high)`` as ``"value [low, high]"`` to two decimals; ``"—"`` for NaN."""
    value, low, high = v
    if not np.isfinite(value):
        return "—"
    if low == high:
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def markdown_table(
    evaluation: dict[str, dict[str, list[float]]],
    names: dict[str, str] | None = None,
    *,
    ceiling: dict[str, dict[str, list[float]]] | None = None,
    seeds: int = 1,
) -> str:
    """One row per estimator: the statistics of :data:`STAT_COLUMNS` with their intervals.

    ``names`` gives an estimator's label in the table (default: its key). With
    ``ceiling`` (``{"between_seeds": stats, "ceiling": stats}``, see
    :func:`jaxtransfer.apps.reproduce._common.ceilings`) the table ends with
    the :data:`CEILING_ROWS` for ``seeds`` seeds; a statistic a row lacks is —.
    """
    names = names or {}
    head = "| estimator | " + " | ".join(label for _, label in STAT_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(STAT_COLUMNS) + 1)]
    rows = [(names.get(est, est), stats) for est, stats in evaluation.items()]
    if ceiling:
        rows += [(label.format(n=seeds), ceiling[key]) for key, label in CEILING_ROWS if key in ceiling]
    missing = (float("nan"),) * 3
    for label, stats in rows:
        cells = " | ".join(cell(stats.get(key, missing)) for key, _ in STAT_COLUMNS)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def write_report(out: Path, results: dict, markdown: str) -> list[Path]:
    """``results.json`` (NumPy arrays and scalars as JSON) and ``report.md`` in ``out``, each written
    whole, then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        atomic_write(out / "results.json", json.dumps(_jsonable(results), indent=1, allow_nan=True)),
        atomic_write(out / "report.md", markdown),
    ]


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.floating | np.integer | np.bool_):
        return x.item()
    return x
