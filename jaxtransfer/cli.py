"""The ``jaxtransfer`` command line: ``score``, ``list``, ``demo``, ``rank``, ``reproduce`` and ``zoo``.

Errors in the input (a missing, truncated or malformed file, an unknown
estimator, a shape mismatch, an option out of range, an output path that cannot
be written) print one line on stderr and exit with status 2; nothing is
written. Output paths and options are checked before any work starts.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
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


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`CLIError`s: one line, exit status 2 (sub-commands too)."""

    def error(self, message: str):
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer (1 or more)")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def load_array(spec: str, what: str) -> np.ndarray:
    """Read ``FILE.npy``, ``FILE.npz`` (its only array) or ``FILE.npz:KEY``; nothing is unpickled.

    Raises:
      CLIError: a missing file, a file that is not ``.npy``/``.npz``, an array
        of Python objects, a truncated or corrupt file, or a missing or
        ambiguous ``KEY``; the message starts with ``what``.
    """
    from ._io import npz_names, read_npy, read_npz

    path, _, key = spec.partition(":") if spec.count(":") == 1 and not Path(spec).exists() else (spec, "", "")
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what}: no such file: {path}")
    with open(p, "rb") as fh:
        magic = fh.read(6)
    kind = "npy" if magic == b"\x93NUMPY" else "npz" if magic.startswith(b"PK") else None
    if kind is None:
        raise CLIError(
            f"{what}: {path} is not a readable .npy/.npz file ("
            + ("it is empty)" if not magic else "no NumPy or zip header)")
        )
    try:
        if kind == "npy":
            if key:
                raise CLIError(f"{what}: {path} is a .npy file; ':{key}' applies only to .npz files")
            return read_npy(p, what=".npy file")
        keys = npz_names(p, what=".npz file")
        if key:
            if key not in keys:
                raise CLIError(f"{what}: {path} has no array {key!r}; it has {', '.join(keys) or 'none'}")
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise CLIError(
                f"{what}: {path} holds {len(keys) or 'no'} arrays"
                + (f" ({', '.join(keys)}); choose one with {path}:KEY" if keys else "")
            )
        return read_npz(p, what=".npz file", names=[key])[key]
    except ValueError as err:
        raise CLIError(f"{what}: {err}") from None


def _check_output(path: str, what: str, *, folder: bool = False) -> Path:
    """``path`` checked as an output file (or folder) before any work starts; CLIError if unusable."""
    from ._io import check_output_file, check_output_folder

    try:
        return check_output_folder(path, what=what) if folder else check_output_file(path, what=what)
    except ValueError as err:
        raise CLIError(str(err)) from None


def _write(path: Path, text: str, what: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise CLIError(f"{what}: could not write {path} ({err.strerror or err})") from None


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

    output = _check_output(args.output, "--output") if args.output else None
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
    if output is not None:
        _write(output, text, "--output")
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

    output = _check_output(args.output, "--output") if args.output else None
    try:
        result = run_demo(print_fn=print if args.format == "table" else (lambda *a, **k: None))
    except RuntimeError as err:
        raise CLIError(str(err)) from None
    if args.format == "json":
        print(json.dumps(result, indent=2))
    if output is not None:
        _write(output, json.dumps(result, indent=2), "--output")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxtransfer", description="Transferability estimation in JAX.")
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
    try:
        args = _parser().parse_args(argv)
        return args.run(args)
    except CLIError as err:
        print(f"jaxtransfer: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
