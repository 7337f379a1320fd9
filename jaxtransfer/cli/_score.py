"""``jaxtransfer score``, ``list`` and ``demo``: estimators on arrays from files."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import _hosts as hosts
from .. import estimators
from .._io import array_files
from ..apps import run_demo
from ..estimators import score_sources
from . import _distributed as distributed
from ._common import CLIError, add_out_argument, check_output, load_array, out_argument, write_text

__all__ = ["add_demo_parser", "add_list_parser", "add_score_parser"]

# Dimensions of one sample set per input kind: labels [n], features [n, d]...
_CORE_NDIM = {
    "labels": (1,),
    "probabilities": (2,),
    "features": (2,),
    "predictions": (1, 2),
    "values": (1, 2),
}


def _stack(name: str, arr: np.ndarray, kind: str, stacked: bool) -> np.ndarray:
    """Add a stack axis to a single sample set; check the dimensions."""
    core = _CORE_NDIM[kind]
    if arr.ndim == max(core) + 1 or (stacked and arr.ndim == min(core) + 1):
        return arr
    if arr.ndim in core:
        return arr[None]
    shapes = " or ".join(f"{d}-D" for d in sorted({*core, max(core) + 1}))
    raise CLIError(f"{name}: expected {kind} as a {shapes} array, got shape {list(arr.shape)}")


def _format(result: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result, indent=2)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    scores = np.asarray(result["scores"])
    l2 = result.get("l2")
    multi = scores.ndim == 3
    writer.writerow(["source", "target", *(["l2"] if multi else []), "score"])
    for s, source in enumerate(result["sources"]):
        for t, target in enumerate(result["targets"]):
            if multi:
                for j, lam in enumerate(l2):
                    writer.writerow([source, target, lam, repr(float(scores[s, t, j]))])
            else:
                writer.writerow([source, target, repr(float(scores[s, t]))])
    return out.getvalue()


def _one_file(specs: list[str]) -> bool:
    """One ``--source`` file (sources stacked in it), not one source per file (several, a folder, a glob)."""
    if len(specs) != 1:
        return False
    path = Path(specs[0])
    if path.is_dir():
        return False
    return path.exists() or not (set(specs[0]) & set("*?["))


def _file_sources(specs: list[str], kind: str) -> list[Path]:
    """One source per file: the files named by ``specs``, the first one's dimensions checked."""
    files = array_files(specs, what="--source", error=CLIError)
    first = load_array(str(files[0]), "--source")
    if first.ndim not in _CORE_NDIM[kind]:
        dims = " or ".join(f"{d}-D" for d in _CORE_NDIM[kind])
        raise CLIError(
            f"--source: {files[0]}: expected one source per file, {kind} as a {dims} array, "
            f"got shape {list(first.shape)}"
        )
    return files


def _stacked_reader(spec: str, kind: str, stacked: bool) -> tuple[Callable[[int], np.ndarray], int]:
    """Source ``i`` of one ``--source`` file, and the number of sources in it.

    A ``.npy`` file is mapped again for each source, so that the pages read go
    with the source once it is copied: memory holds one chunk of sources, not
    the file.
    """
    arr = _stack("--source", load_array(spec, "--source"), kind, stacked)
    count = arr.shape[0]
    if not isinstance(arr, np.memmap):  # an .npz member: already in memory
        return arr.__getitem__, count
    del arr
    return (lambda i: _stack("--source", load_array(spec, "--source"), kind, stacked)[i]), count


def _subset(reader: Callable[[int], np.ndarray], rows: np.ndarray) -> Callable[[int], np.ndarray]:
    """Source ``j`` of this process's share: source ``rows[j]`` of ``reader``."""
    return lambda j: reader(int(rows[j]))


def _score(args) -> int:
    path = out_argument(args)
    out = check_output(path, "--out") if path else None
    try:
        fn = estimators.get_estimator(args.estimator)
    except ValueError as err:
        raise CLIError(str(err)) from None
    info = fn.info
    if info.source == "none":
        raise CLIError(f"{info.name} takes no source; use it from Python: jaxtransfer.{info.name}(targets)")
    index, processes = distributed.start(args)
    if _one_file(args.source):
        sources, total = _stacked_reader(args.source[0], info.source, args.stacked)
        all_names = None
    else:
        sources = _file_sources(args.source, info.source)
        total, all_names = len(sources), [p.stem for p in sources]
    # several processes: each scores its own rows (index, index + N, ...), then all rows are gathered
    owner = hosts.strided(total, processes)
    rows = hosts.local_rows(owner, index)
    if processes > 1:
        sources = [sources[r] for r in rows] if isinstance(sources, list) else _subset(sources, rows)
    count, names = rows.size, None
    options = {}
    target_kind = info.target
    if args.task is not None:
        if "task" not in info.options:
            raise CLIError(f"--task applies to {_taking('task')}, not {info.name}")
        options["task"] = args.task
        if args.task != "classification":
            target_kind = "values"
    if args.bins is not None:
        if "bins" not in info.options:
            raise CLIError(f"--bins applies to {_taking('bins')}, not {info.name}")
        options["bins"] = args.bins
    targets = _stack("--target", load_array(args.target, "--target"), target_kind, args.stacked)
    if args.l2 is not None:
        if "l2" not in info.options:
            raise CLIError(f"--l2 applies to {_taking('l2')}, not {info.name}")
        options["l2"] = args.l2[0] if len(args.l2) == 1 else np.asarray(args.l2)
    if args.logits:
        if "logits" not in info.options:
            raise CLIError(f"--logits applies to {_taking('logits')}, not {info.name}")
        options["logits"] = True
    if args.num_source_classes is not None:
        options["num_source_classes"] = args.num_source_classes
    if args.num_target_classes is not None:
        options["num_target_classes"] = args.num_target_classes
    options.update(info.caller_options(seed=args.seed))
    mask = load_array(args.mask, "--mask") if args.mask else None
    try:
        with hosts.fail_together():  # a bad file of one process's share stops every process
            result = score_sources(
                fn, sources, targets, num_sources=count, names=names, mask=mask, progress=None, **options
            )
    except (ValueError, TypeError, OSError, hosts.ProcessFailedError) as err:
        raise CLIError(str(err)) from None
    scores = hosts.gather_rows(np.asarray(result.scores), owner)
    if processes > 1:
        names = all_names
    elif result.names is not None:
        names = list(result.names)
    if index != 0:  # process 0 writes the outputs
        return 0
    result = {
        "estimator": info.name,
        "orientation": info.orientation,
        "reference": info.reference,
        "shape": list(scores.shape),
        "sources": names if names is not None else list(range(scores.shape[0])),
        "targets": list(range(scores.shape[1])),
        "scores": scores.tolist(),
    }
    if "l2" in options:
        result["l2"] = np.atleast_1d(options["l2"]).tolist()
    text = _format(result, args.format)
    if out is not None:
        write_text(out, text, "--out")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _taking(option: str) -> str:
    """The estimators that take ``option``, for error messages."""
    names = [
        n for n in estimators.available_estimators() if option in estimators.get_estimator(n).info.options
    ]
    return " and ".join(names)


def _list(args) -> int:
    for name in estimators.available_estimators():
        info = estimators.get_estimator(name).info
        print(f"{name:20s} {info.task:15s} source={info.source:14s} {info.orientation:17s} {info.reference}")
    return 0


def _demo(args) -> int:
    path = out_argument(args)
    out = check_output(path, "--out") if path else None
    try:
        result = run_demo(print_fn=print if args.format == "table" else (lambda *a, **k: None))
    except RuntimeError as err:
        raise CLIError(str(err)) from None
    if args.format == "json":
        print(json.dumps(result, indent=2))
    if out is not None:
        write_text(out, json.dumps(result, indent=2), "--out")
    return 0


def add_score_parser(sub) -> None:
    score = sub.add_parser("score", help="score sources against targets from .npy/.npz files")
    score.add_argument("--estimator", required=True, help="estimator name (see `jaxtransfer list`)")
    score.add_argument(
        "--source",
        required=True,
        nargs="+",
        metavar="SOURCE",
        help="FILE.npy, FILE.npz or FILE.npz:KEY holding [n, ...] or [S, n, ...]; or one source "
        "[n, ...] per file: a FOLDER (every .npy in it, by name), a quoted 'GLOB' or several files. "
        ".npy files are memory-mapped and scored a chunk of sources at a time",
    )
    score.add_argument(
        "--target", required=True, help="FILE.npy, FILE.npz or FILE.npz:KEY; [n, ...] or [T, n, ...]"
    )
    score.add_argument("--mask", help="optional bool [n] sample mask file")
    score.add_argument("--l2", type=float, nargs="+", help="ridge penalty value(s) for linear_mse/label_mse")
    score.add_argument("--logits", action="store_true", help="leep: the source file holds logits")
    score.add_argument(
        "--task",
        choices=("classification", "regression", "multilabel"),
        help="for logme/transrate: what the targets are (default classification)",
    )
    score.add_argument("--bins", type=int, help="transrate --task regression: bins per output dimension")
    score.add_argument("--seed", type=int, default=0, help="PRNG seed for estimators that take a key (nleep)")
    score.add_argument("--num-source-classes", type=int)
    score.add_argument("--num-target-classes", type=int)
    score.add_argument(
        "--stacked",
        action="store_true",
        help="2-D predictions/values are stacked [S, n] / [T, n], not one [n, k] set",
    )
    score.add_argument("--format", choices=("json", "csv"), default="json")
    add_out_argument(score, "write the scores to this file instead of stdout")
    distributed.add_distributed_arguments(score)
    score.set_defaults(run=_score)


def add_list_parser(sub) -> None:
    lst = sub.add_parser("list", help="list the estimators")
    lst.set_defaults(run=_list)


def add_demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="attribute transfer on scikit-learn digits (no files needed)")
    demo.add_argument("--format", choices=("table", "json"), default="table")
    add_out_argument(demo, "also write the results as JSON to this file")
    demo.set_defaults(run=_demo)
