"""``jaxtransfer bench``: time ``score_matrix`` of any estimator at chosen sizes on the current devices.

Prints a table on stdout (progress lines on stderr) and, with ``--out``/``--json``,
writes every figure and the environment as JSON. The work is
:func:`jaxtransfer.apps.microbench`; its docstring says what is counted.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax

from ..apps import microbench, microbench_table
from ._common import CLIError, check_output, non_negative_int, positive_int, write_text

__all__ = ["add_bench_parser"]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def _bench(args) -> int:
    path = args.out
    if args.json is not None:
        if path is not None:
            raise CLIError("--json is another name for --out; pass one of them")
        path = args.json
    out = check_output(path, "--out") if path else None
    try:
        report = microbench(
            args.estimator,
            sources=args.sources,
            targets=args.targets,
            samples=args.samples,
            dim=args.dim,
            classes=args.classes,
            source_classes=args.source_classes,
            repeats=args.repeats,
            warmup=args.warmup,
            batch_size=args.batch_size,
            dtype=args.dtype,
            devices="all" if args.devices else "first",
            seed=args.seed,
            stages=not args.no_stages,
            matmul_size=args.matmul_size,
            memory_fraction=args.memory_fraction,
            source_chunk=args.source_chunk,
            print_fn=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
        )
    except jax.errors.JAXTypeError:  # a bug, not the user's input: the traceback is wanted
        raise
    except (ValueError, TypeError) as err:
        raise CLIError(str(err)) from None
    print(microbench_table(report))
    if out is not None:
        write_text(out, json.dumps(report, indent=2) + "\n", "--out")
    return 0


def add_bench_parser(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="time score_matrix of estimators on synthetic inputs (compile, run, pairs/s, FLOP/s, memory)",
    )
    bench.add_argument(
        "--estimator",
        action="append",
        required=True,
        help="estimator name, or 'all'; repeat for several (see `jaxtransfer list`)",
    )
    for flag, default, what in (
        ("--sources", 8, "S, the number of sources"),
        ("--targets", 8, "T, the number of targets"),
        ("--samples", 1000, "n, samples per source and target"),
        ("--dim", 64, "d, the feature width of feature sources"),
        ("--classes", 10, "C, target classes (one-hot columns for real-valued targets)"),
        ("--source-classes", 10, "Cz, source classes (label, probability and prediction sources)"),
        ("--repeats", 5, "timed runs after the warm-up"),
    ):
        bench.add_argument(flag, type=positive_int, default=default, help=f"{what} (default {default})")
    bench.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs first (default 1)")
    bench.add_argument("--batch-size", type=positive_int, help="score_matrix's sources per step")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    bench.add_argument(
        "--devices",
        action="store_true",
        help="use every local device, the sources sharded over them (default: the first device)",
    )
    bench.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    bench.add_argument("--no-stages", action="store_true", help="skip the gram and eigh stage timings")
    bench.add_argument(
        "--matmul-size", type=positive_int, help="side of the timed matmul (default 8192 GPU/TPU, 1024 CPU)"
    )
    bench.add_argument(
        "--memory-fraction",
        type=_fraction,
        default=0.5,
        help="of the device memory the sources may take before they are chunked (default 0.5)",
    )
    bench.add_argument("--source-chunk", type=positive_int, help="sources held on the device at once")
    bench.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    bench.add_argument("--out", "-o", help="write the JSON report to this file")
    bench.add_argument("--json", help="the same as --out")
    bench.set_defaults(run=_bench)
