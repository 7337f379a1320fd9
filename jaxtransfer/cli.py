"""The ``jaxtransfer`` command line: ``score``, ``list``, ``demo``, ``rank``, ``reproduce`` and ``zoo``.

Errors in the input (a missing or malformed file, an unknown estimator, a shape
mismatch) print one line on stderr and exit with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["load_array", "main"]

# Dimensions of one sample set per input kind: labels [n], features [n, d]...
_CORE_NDIM = {
    "labels": (1,),
    "probabilities": (2,),
    "features": (2,),
    "predictions": (1, 2),
    "values": (1, 2),
}


class CLIError(Exception):
    """A user error: reported in one line, exit status 2."""


def load_array(spec: str, what: str) -> np.ndarray:
    """Read ``FILE.npy``, ``FILE.npz`` (its only array) or ``FILE.npz:KEY`` without unpickling."""
    path, _, key = spec.partition(":") if spec.count(":") == 1 and not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what}: no such file: {path}")
    with open(p, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK\x03\x04"):
        raise CLIError(f"{what}: {path} is not a readable .npy/.npz file (no NumPy or zip header)")
    try:
        loaded = np.load(p, allow_pickle=False)
    except ValueError as err:
        raise CLIError(f"{what}: {path} holds Python objects, which are not loaded ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise CLIError(f"{what}: {path} is not a readable .npy/.npz file ({err})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            if key:
                if key not in keys:
                    raise CLIError(f"{what}: {path} has no array {key!r}; it has {', '.join(keys) or 'none'}")
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise CLIError(
                    f"{what}: {path} holds {len(keys)} arrays ({', '.join(keys)}); choose one with {path}:KEY"
                )
            try:
                return loaded[key]
            except ValueError as err:
                raise CLIError(
                    f"{what}: {path}:{key} holds Python objects, which are not loaded ({err})"
                ) from None
    if key:
        raise CLIError(f"{what}: {path} is a .npy file; ':{key}' applies only to .npz files")
    return loaded


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
    for s in range(scores.shape[0]):
        for t in range(scores.shape[1]):
            if multi:
                for j, lam in enumerate(l2):
                    writer.writerow([s, t, lam, repr(float(scores[s, t, j]))])
            else:
                writer.writerow([s, t, repr(float(scores[s, t]))])
    return out.getvalue()


def _score(args) -> int:
    import jaxtransfer as jt

    try:
        fn = jt.get_estimator(args.estimator)
    except ValueError as err:
        raise CLIError(str(err)) from None
    info = fn.info
    if info.source == "none":
        raise CLIError(
            f"{info.name} takes no source; use it from Python: jaxtransfer.{info.name}(target_labels)"
        )
    sources = _stack("--source", load_array(args.source, "--source"), info.source, args.stacked)
    options = {}
    target_kind = info.target
    if args.task is not None:
        if "task" not in _option_names(info):
            raise CLIError(f"--task applies to estimators with several task types, not {info.name}")
        options["task"] = args.task
        if args.task != "classification":
            target_kind = "values"
    if args.bins is not None:
        if "bins" not in _option_names(info):
            raise CLIError(f"--bins applies to transrate, not {info.name}")
        options["bins"] = args.bins
    targets = _stack("--target", load_array(args.target, "--target"), target_kind, args.stacked)
    if args.l2 is not None:
        if info.name not in ("linear_mse", "label_mse"):
            raise CLIError(f"--l2 applies to linear_mse and label_mse, not {info.name}")
        options["l2"] = args.l2[0] if len(args.l2) == 1 else np.asarray(args.l2)
    if args.logits:
        if info.name != "leep":
            raise CLIError(f"--logits applies to leep, not {info.name}")
        options["logits"] = True
    if args.num_source_classes is not None:
        options["num_source_classes"] = args.num_source_classes
    if args.num_target_classes is not None:
        options["num_target_classes"] = args.num_target_classes
    if "key" in _option_names(info):
        import jax

        options["key"] = jax.random.key(args.seed)
    mask = load_array(args.mask, "--mask") if args.mask else None
    try:
        scores = np.asarray(jt.score_matrix(fn, sources, targets, mask=mask, **options))
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from None
    result = {
        "estimator": info.name,
        "orientation": info.orientation,
        "reference": info.reference,
        "shape": list(scores.shape),
        "scores": scores.tolist(),
    }
    if "l2" in options:
        result["l2"] = np.atleast_1d(options["l2"]).tolist()
    text = _format(result, args.format)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _option_names(info) -> set[str]:
    """The keyword options an estimator's function accepts."""
    import inspect

    from ._estimator import get_estimator

    params = inspect.signature(get_estimator(info.name)).parameters
    return {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _list(args) -> int:
    import jaxtransfer as jt

    for name in jt.available_estimators():
        info = jt.get_estimator(name).info
        print(f"{name:20s} {info.task:15s} source={info.source:14s} {info.orientation:17s} {info.reference}")
    return 0


def _demo(args) -> int:
    from ._demo import run_demo

    try:
        result = run_demo(print_fn=print if args.format == "table" else (lambda *a, **k: None))
    except RuntimeError as err:
        raise CLIError(str(err)) from None
    if args.format == "json":
        print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxtransfer", description="Transferability estimation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score sources against targets from .npy/.npz files")
    score.add_argument("--estimator", required=True, help="estimator name (see `jaxtransfer list`)")
    score.add_argument(
        "--source", required=True, help="FILE.npy, FILE.npz or FILE.npz:KEY; [n, ...] or [S, n, ...]"
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
    score.add_argument("--output", "-o", help="write here instead of stdout")
    score.set_defaults(run=_score)

    lst = sub.add_parser("list", help="list the estimators")
    lst.set_defaults(run=_list)

    demo = sub.add_parser("demo", help="attribute transfer on scikit-learn digits (no files needed)")
    demo.add_argument("--format", choices=("table", "json"), default="table")
    demo.add_argument("--output", "-o", help="also write the results as JSON here")
    demo.set_defaults(run=_demo)

    from ._cli_rank import add_rank_parser
    from ._cli_reproduce import add_reproduce_parser
    from ._cli_zoo import add_zoo_parser

    add_rank_parser(sub)
    add_reproduce_parser(sub)
    add_zoo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except CLIError as err:
        print(f"jaxtransfer: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
