"""``jaxtransfer reproduce attributes|keypoints``: the seed papers' protocols as quality benchmarks."""

from __future__ import annotations

from ..apps.reproduce import run_attributes, run_keypoints
from ._common import CLIError, check_output

__all__ = ["add_reproduce_parser"]


def _reproduce(args) -> int:
    run = run_attributes if args.protocol == "attributes" else run_keypoints
    out = check_output(args.out, "--out", folder=True)
    check_output(str(out / args.protocol), "--out", folder=True)
    if args.cache:
        check_output(args.cache, "--cache", folder=True)
    try:
        results = run(out, quick=args.quick, cache=args.cache, progress=False if args.no_progress else None)
    except (ValueError, FloatingPointError) as err:
        raise CLIError(str(err)) from None
    folder = out / args.protocol
    print(
        f"wrote {folder / 'report.md'}, {folder / 'results.json'} and plots in {results['wall_time_s']:.0f} s"
    )
    print((folder / "report.md").read_text())
    return 0


def add_reproduce_parser(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce the seed papers' experiments offline (attribute transfer, keypoint regression)",
        description="Train source models, measure actual transfer, score every pair with every estimator "
        "and write a JSON + Markdown + PNG report of how well each estimator predicts transfer.",
    )
    p.add_argument("protocol", choices=("attributes", "keypoints"))
    p.add_argument(
        "--out", "-o", default="bench/results/quality", help="results folder (default: bench/results/quality)"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke test that runs in about a minute"
    )
    p.add_argument(
        "--cache", help="trained source models are kept here (default: $JAXTRANSFER_CACHE/reproduce)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_reproduce)
