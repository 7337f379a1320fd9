"""The ``jaxtransfer`` command line: ``score``, ``list``, ``demo``, ``rank``, ``reproduce``, ``zoo`` and
``bench``.

Errors in the input (a missing, truncated or malformed file, an unknown
estimator, a shape mismatch, an option out of range, an output path that cannot
be written) print one line on stderr and exit with status 2; nothing is
written. Output paths and options are checked before any work starts. An
option means the same in every command: ``--out/-o`` is where a command writes
(``--output``, its former name in ``score`` and ``demo``, still works with a
warning on stderr). One module per command; what they share is in ``_common.py``.
"""

from __future__ import annotations

import sys

from ._bench import add_bench_parser
from ._common import CLIError, Parser
from ._rank import add_rank_parser
from ._reproduce import add_reproduce_parser
from ._score import add_demo_parser, add_list_parser, add_score_parser
from ._zoo import add_zoo_parser

__all__ = ["main"]


def _parser() -> Parser:
    parser = Parser(prog="jaxtransfer", description="Transferability estimation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        add_score_parser,
        add_list_parser,
        add_demo_parser,
        add_rank_parser,
        add_reproduce_parser,
        add_zoo_parser,
        add_bench_parser,
    ):
        add(sub)
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
