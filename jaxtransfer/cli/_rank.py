"""``jaxtransfer rank``: rank candidate sources for a target dataset (the main job).

With ``--coordinator HOST:PORT --num-processes N --process-id I`` (or
``--distributed``) every process runs the same command; the sources are split
over the processes by model (:func:`jaxtransfer.apps.rank`), and process 0
alone prints the answer and writes ``--out``. The others print nothing on
stdout (their stage messages and warnings go to stderr).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings

from .. import _hosts as hosts
from .. import models
from ..apps import (
    FewPairsWarning,
    NotComputedWarning,
    SourceSpec,
    answer_table,
    compact_evaluation,
    default_dataset,
    evaluation_table,
    load_dataset,
    rank,
    ranked_table,
    subsample,
    write_outputs,
)
from . import _distributed as distributed
from ._common import CLIError, check_output, non_negative_int, positive_int


def _inputs(args, say):
    """The target images, labels and task names, the image size, and the sources asked for."""
    if args.max_samples is not None and args.max_samples < 10:
        raise ValueError(f"--max-samples must be at least 10, got {args.max_samples}")
    if args.data:
        images, labels, names = load_dataset(args.data, what="--data")
        if args.max_samples:
            images, labels = subsample(images, labels, args.max_samples, seed=args.seed)
        image_size = args.image_size
        what = args.data
    else:
        images, labels, names = default_dataset(args.max_samples or 1000, seed=args.seed)
        image_size = args.image_size or 64  # 8×8 digits: 64 px keeps the CPU run to minutes
        what = "scikit-learn digits (a stratified 1000 unless --max-samples), 20 attribute tasks"
    specs = [SourceSpec.parse(m) for m in args.sources or list(models.zoo.available())]
    specs += [
        SourceSpec(s.model, layer) for s in list(specs) if s.layer is None for layer in args.layers or ()
    ]
    say(f"target data: {what}: {images.shape[0]} images {images.shape[1:]}, {labels.shape[0]} tasks")
    say(f"sources: {', '.join(s.name for s in specs)}")
    return images, labels, names, image_size, specs


def _run(args, say, quiet: bool):
    """``rank`` on the command's inputs; estimators that could not be computed warned on stderr."""
    try:
        images, labels, names, image_size, specs = _inputs(args, say)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NotComputedWarning)
            warnings.simplefilter("always", FewPairsWarning)
            result = rank(
                images, labels, names, specs,
                estimators=args.estimators, pick_by=args.pick_by, pick_resamples=args.pick_resamples,
                image_size=image_size, batch_size=args.batch_size,
                ground_truth=not args.no_ground_truth, num_bootstrap=args.bootstrap, seed=args.seed,
                devices=args.devices, progress=None if not quiet else False, print_fn=say,
            )  # fmt: skip
    except (
        models.zoo.WeightsUnavailableError,
        models.zoo.UnsafeFileError,
        hosts.ProcessFailedError,
        ValueError,
        TypeError,
        FileNotFoundError,
    ) as err:
        raise CLIError(str(err)) from None
    for w in caught:  # estimators that could not be computed: loud, whatever the format
        if issubclass(w.category, (NotComputedWarning, FewPairsWarning)):
            print(f"jaxtransfer: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _print(result, written, folder, quiet: bool, wide: bool) -> None:
    """The result as one JSON document (``--format json``), or the answer (100 columns; ``--wide``
    adds the wide tables) and a stage summary."""
    if quiet:
        print(json.dumps({
            "sources": result.sources, "targets": result.targets,
            "pick_by": result.pick_by, "picks": [dataclasses.asdict(p) for p in result.picks],
            "scores": {e: m.tolist() for e, m in result.scores.items()},
            "actual_accuracy": None if result.actual is None else result.actual.tolist(),
            "not_computed": result.not_computed,
            "evaluation": result.evaluation, "timings_s": result.timings,
            "estimator_seconds": result.estimator_seconds,
        }, indent=1))  # fmt: skip
        return
    if wide:
        for table in (ranked_table(result), evaluation_table(result)):
            print()
            print(table)
    else:
        print()
        print("How well each estimator predicted head-retraining accuracy (95% intervals over sources):")
        print(compact_evaluation(result))
    print()
    print("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()))
    if written:
        print(f"wrote {len(written)} files to {folder} (report.txt has the wide tables)")
    print()
    print("Which source to transfer from, for each target:")
    print(answer_table(result))


def _messages(index: int, quiet: bool):
    """Where stage messages go: stdout on process 0, stderr (marked) on the others, nowhere with JSON."""

    def say(*args, **kwargs) -> None:
        if index == 0:
            print(*args, **kwargs)
        else:  # only process 0 prints on stdout
            print(f"[process {index}]", *args, **kwargs, file=sys.stderr)

    return (lambda *a, **k: None) if quiet else say


def _rank(args) -> int:
    index, _ = distributed.start(args)
    out = check_output(args.out, "--out", folder=True) if args.out else None
    quiet = args.format == "json"
    say = _messages(index, quiet)
    started = time.perf_counter()
    result = _run(args, say, quiet)
    if index != 0:  # process 0 writes the outputs
        return 0
    written = []
    if out is not None:
        t0 = time.perf_counter()
        try:
            written = write_outputs(result, out, plots=not args.no_plots)
        except (OSError, ValueError) as err:
            raise CLIError(f"--out: could not write the results to {out} ({err})") from None
        result.timings["outputs"] = time.perf_counter() - t0
    result.timings["total"] = time.perf_counter() - started
    _print(result, written, args.out, quiet, args.wide)
    return 0


def add_rank_parser(sub) -> None:
    p = sub.add_parser(
        "rank",
        help="rank sources (the zoo's backbones by default) for a target dataset (digits by default)",
        description="Extract features with each source, score every estimator, measure head-retraining "
        "transfer, and judge the estimators against it. Several processes (one per host, or several on "
        "one machine) share the work when each runs the same command with --coordinator HOST:PORT "
        "--num-processes N --process-id I (or --distributed): the sources are split by model (model k "
        "to process k %% N), the results gathered, and process 0 alone prints the answer and writes "
        "--out.",
    )
    p.add_argument(
        "--data", help="target .npz with 'images' [N,H,W(,C)] and 'labels' [N] or [N,T] (default: digits)"
    )
    p.add_argument(
        "--sources",
        nargs="+",
        help="zoo names, NAME:LAYER, or model .npz files from jaxtransfer.sources.save",
    )
    p.add_argument("--layers", nargs="+", help="also score these layers of every source (e.g. stage5 stage6)")
    p.add_argument("--estimators", nargs="+", help="estimators to use (default: all that apply)")
    p.add_argument(
        "--pick-by",
        help="the estimator that recommends a source per target (default: logme, or the first of the "
        "preference order that runs; see the README)",
    )
    p.add_argument(
        "--pick-resamples",
        type=non_negative_int,
        default=20,
        help="random 80%% subsamples of the images for how sure each pick is (0: none; default 20)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        help="input side for the backbones, a positive integer (default: theirs; digits: 64)",
    )
    p.add_argument(
        "--max-samples",
        type=int,
        help="use a seeded stratified sample of N images (stratified on all tasks' labels; digits: 1000)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument(
        "--devices",
        type=positive_int,
        help="split each extraction batch over the first N local devices (default: all of them)",
    )
    p.add_argument("--no-ground-truth", action="store_true", help="skip head retraining (and the evaluation)")
    p.add_argument(
        "--bootstrap",
        type=non_negative_int,
        default=1000,
        help="bootstrap resamples for the intervals, an integer >= 0 (0: no intervals; default 1000)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", help="write JSON, CSV and PNG files into this folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--wide", action="store_true", help="also print the wide tables (mean ranks, every statistic)"
    )
    distributed.add_distributed_arguments(p)
    p.set_defaults(run=_rank)
