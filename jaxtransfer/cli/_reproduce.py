"""``jaxtransfer reproduce attributes|keypoints``: the seed papers' protocols as quality benchmarks."""

from __future__ import annotations

from ..apps.reproduce import DEFAULT_SEEDS, run_attributes, run_keypoints
from ._common import CLIError, check_output

__all__ = ["DEFAULT_OUT", "add_reproduce_parser"]

# Not tracked by git (.gitignore): a run never overwrites the committed reports in bench/results/quality,
# which are regenerated on purpose with ``--out bench/results/quality`` (``make reports``).
DEFAULT_OUT = "jaxtransfer-output/reproduce"


def _reproduce(args) -> int:
    run = run_attributes if args.protocol == "attributes" else run_keypoints
    out = check_output(args.out, "--out", folder=True)
    check_output(str(out / args.protocol), "--out", folder=True)
    if args.cache:
        check_output(args.cache, "--cache", folder=True)
    try:
        results = run(
            out, quick=args.quick, cache=args.cache, progress=False if args.no_progress else None,
            seeds=args.seeds,
        )  # fmt: skip
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
        "and write a JSON + Markdown + PNG report of how well each estimator predicts transfer, with the "
        "code version (jaxtransfer version, git commit) and configuration that produced it. The report "
        f"goes to OUT/<protocol>/, by default {DEFAULT_OUT}/<protocol>/, which git ignores; the committed "
        "reports are regenerated only on request: --out bench/results/quality (or make reports).",
    )
    p.add_argument("protocol", choices=("attributes", "keypoints"))
    p.add_argument(
        "--out",
        "-o",
        default=DEFAULT_OUT,
        help=f"results folder; the report goes to OUT/<protocol>/ (default: {DEFAULT_OUT}, not tracked by "
        "git; bench/results/quality overwrites the committed reports)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke test that runs in about a minute"
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help=f"run each transfer with N seeds (default {DEFAULT_SEEDS}; 1 with --quick): the ground truth "
        "is their mean and their agreement the noise ceiling that no estimator can be expected to beat "
        "(needs N >= 2)",
    )
    p.add_argument(
        "--cache", help="trained source models are kept here (default: $JAXTRANSFER_CACHE/reproduce)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_reproduce)
