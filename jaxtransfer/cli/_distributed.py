"""Multi-process mode of the command line: ``--coordinator HOST:PORT --num-processes N --process-id I``.

Every process runs the same command. ``jax.distributed.initialize`` joins them
(on CPUs with gloo collectives); each process scores its own share of the
sources on its local devices (``score``: rows ``I, I + N, I + 2N, …``;
``rank``: whole models, model ``k`` on process ``k % N``), the rows are
gathered to every process (:mod:`jaxtransfer._hosts`) and process 0 alone
writes the outputs. ``--distributed`` instead lets JAX detect the
cluster from its environment (SLURM, Cloud TPU, …).

Native libraries write to the process's standard output (gloo prints a line
when its processes connect), which would corrupt a JSON answer there; in
this mode the command's own output keeps the standard output and whatever
else is written to file descriptor 1 goes to standard error.
"""

from __future__ import annotations

import os
import sys

from ._common import CLIError

__all__ = ["add_distributed_arguments", "start"]


def add_distributed_arguments(parser) -> None:
    group = parser.add_argument_group(
        "several processes (each runs the same command; process 0 writes the outputs)"
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0's coordinator")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes take part")
    group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a cluster that JAX detects from the environment (SLURM, Cloud TPU...)",
    )


def start(args) -> tuple[int, int]:
    """Join the processes when asked; returns (this process's index, process count)."""
    given = [args.coordinator is not None, args.num_processes is not None, args.process_id is not None]
    if not any(given) and not args.distributed:
        return 0, 1
    if args.distributed and any(given):
        raise CLIError("give --distributed or --coordinator/--num-processes/--process-id, not both")
    if not args.distributed and not all(given):
        raise CLIError("--coordinator, --num-processes and --process-id go together; give all three")
    import jax

    if not args.distributed:
        host, _, port = args.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise CLIError(f"--coordinator must be HOST:PORT, got {args.coordinator!r}")
        if args.num_processes < 1:
            raise CLIError(f"--num-processes must be at least 1, got {args.num_processes}")
        if not 0 <= args.process_id < args.num_processes:
            raise CLIError(f"--process-id must lie in [0, {args.num_processes}), got {args.process_id}")
    _native_stdout_to_stderr()
    # CPU collectives between processes go through gloo (asking for the backend here would start it,
    # which must wait for initialize; the setting does nothing on accelerators)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.distributed:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    return jax.process_index(), jax.process_count()


def _native_stdout_to_stderr() -> None:
    """Point file descriptor 1 at stderr, and ``sys.stdout`` at a copy of the original stdout."""
    sys.stdout.flush()
    stdout = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(stdout, "w", buffering=1 if sys.stdout.line_buffering else -1)
