"""Out-of-core scoring: peak memory and time of score_matrix over sources that never sit in memory together.

Three measurements, each configuration in a fresh subprocess so that its peak
resident memory (``VmHWM`` of ``/proc/self/status``: anonymous memory and the
file pages mapped, at their peak) is its own:

(a) Peak RSS of scoring S sources x T targets (Linear MSE and LogME, n
    samples, d features) with the sources as S ``.npy`` files, memory-mapped,
    streamed a chunk at a time (``score_matrix(name, folder, targets)``),
    against the all-in-memory call (the files loaded and stacked, then
    ``score_matrix(name, stacked, targets)``) on a number of sources that fits
    this machine. Default S = 1,000, T = 100, n = 4,000, d = 256 (4 GB of
    files in a temporary folder, deleted at the end); the in-memory call on
    S = 100.
(b) Time of the streamed call against the in-memory call on the same S that
    fits, medians of ``--repeats`` after a warm-up (compile excluded), in one
    process with ``OPENBLAS_NUM_THREADS=1``; the two results are compared.
(c) Peak RSS of ``jaxtransfer score`` on one stacked source file of 312.5 MiB
    ([80, 4000, 256] float32), against the file size and against the former
    whole-array route (the file loaded, ``score_matrix`` on it).

Targets: T label tasks of 10 classes; LogME takes the labels, Linear MSE their
one-hot encoding [T, n, 10].

    python bench/bench_out_of_core.py                 # JSON under jaxtransfer-output/bench/ (git-ignored)
    python bench/bench_out_of_core.py --out bench/results/out_of_core.json
    python bench/bench_out_of_core.py --tiny --out /tmp/ooc.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ESTIMATORS = ("linear_mse", "logme")
CLASSES = 10
FULL = {"S": 1000, "T": 100, "n": 4000, "d": 256, "S_fit": 100, "cli_S": 80}
TINY = {"S": 12, "T": 3, "n": 64, "d": 8, "S_fit": 6, "cli_S": 10}


def _peak_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_files(folder: Path, size: dict, seed: int = 0) -> None:
    """S feature files [n, d] float32 (informative of the first target) and the label targets [T, n]."""
    rng = np.random.default_rng(seed)
    n, d = size["n"], size["d"]
    y = rng.integers(0, CLASSES, (size["T"], n))
    np.save(folder / "targets.npy", y)
    means = rng.normal(size=(CLASSES, d)).astype(np.float32)
    for s in range(size["S"]):
        f = rng.standard_normal((n, d), dtype=np.float32)
        f += (0.05 * (s % 10)) * means[y[s % size["T"]]]
        np.save(folder / "sources" / f"source_{s:04d}.npy", f)


def _targets(name: str, folder: Path):
    import jaxtransfer as jt

    y = np.load(folder / "targets.npy")
    return jt.get_estimator(name).info.targets_from_labels(y, CLASSES)


# ----------------------------------------------------------------------------- children (one per config)


def child(config: dict) -> dict:
    """One configuration in this fresh process; returns its peak RSS and wall time."""
    folder = Path(config["folder"])
    mode = config["mode"]
    if mode.startswith("cli"):
        from jaxtransfer.cli import main

        start = _rss_mib()
        argv = ["score", "--estimator", "logme", "--source", config["file"], "--target", config["targets"]]
        t0 = time.perf_counter()
        if mode == "cli":
            code = main([*argv, "--out", str(folder / "cli_scores.json")])
            if code:
                raise SystemExit(f"jaxtransfer score exited with {code}")
        else:  # the former route: the whole file in memory, one score_matrix call
            import jaxtransfer as jt

            src = np.load(config["file"])
            np.asarray(jt.score_matrix("logme", src, np.load(config["targets"])))
        return {"peak_rss_mib": _peak_mib(), "rss_at_start_mib": start, "wall_s": time.perf_counter() - t0}

    import jaxtransfer as jt

    name = config["estimator"]
    targets = _targets(name, folder)
    files = sorted((folder / "sources").glob("*.npy"))[: config["S"]]
    start = _rss_mib()
    t0 = time.perf_counter()
    if mode == "stream":
        scores = np.asarray(jt.score_matrix(name, files, targets, progress=False))
    else:
        stacked = np.stack([np.load(p) for p in files])
        scores = np.asarray(jt.score_matrix(name, stacked, targets))
    wall = time.perf_counter() - t0
    np.save(folder / f"scores_{mode}_{name}_{config['S']}.npy", scores)
    return {"peak_rss_mib": _peak_mib(), "rss_at_start_mib": start, "wall_s": wall}


def run_child(config: dict) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"child {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- timing (one process)


def timing(folder: Path, size: dict, repeats: int) -> list[dict]:
    import jax

    import jaxtransfer as jt

    files = sorted((folder / "sources").glob("*.npy"))[: size["S_fit"]]
    rows = []
    for name in ESTIMATORS:
        targets = _targets(name, folder)
        stacked = np.stack([np.load(p) for p in files])

        def in_memory(stacked=stacked, targets=targets, name=name):
            return jax.block_until_ready(jt.score_matrix(name, stacked, targets))

        def streamed(targets=targets, name=name):
            return jax.block_until_ready(jt.score_matrix(name, files, targets, progress=False))

        def load_then_in_memory(targets=targets, name=name):
            arr = np.stack([np.load(p) for p in files])
            return jax.block_until_ready(jt.score_matrix(name, arr, targets))

        want, got = np.asarray(in_memory()), np.asarray(streamed())  # warm-up: compiles
        load_then_in_memory()
        times: dict[str, list[float]] = {"in_memory": [], "streamed": [], "load_then_in_memory": []}
        for _ in range(repeats):  # interleaved, so that load from the other agents hits all alike
            for key, fn in (
                ("in_memory", in_memory),
                ("streamed", streamed),
                ("load_then_in_memory", load_then_in_memory),
            ):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            {
                "estimator": name,
                "S": size["S_fit"],
                "median_s": med,
                "all_s": times,
                "ratio_streamed_vs_in_memory": med["streamed"] / med["in_memory"],
                "ratio_streamed_vs_load_then_in_memory": med["streamed"] / med["load_then_in_memory"],
                "max_abs_diff_streamed_vs_in_memory": float(np.max(np.abs(got - want))),
                "max_abs_score": float(np.max(np.abs(want))),
            }
        )
    return rows


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed repetitions (default 3; tiny 1)")
    parser.add_argument("--out", default="jaxtransfer-output/bench/out_of_core.json", help="JSON report path")
    parser.add_argument(
        "--workdir", default=None, help="folder for the temporary files (default: system temp)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    size = TINY if args.tiny else FULL
    repeats = args.repeats or (1 if args.tiny else 3)
    folder = Path(tempfile.mkdtemp(prefix="jt_ooc_", dir=args.workdir))
    report: dict = {"tiny": args.tiny, "sizes": size, "repeats": repeats}
    try:
        (folder / "sources").mkdir()
        t0 = time.perf_counter()
        make_files(folder, size)
        source_bytes = sum(p.stat().st_size for p in (folder / "sources").glob("*.npy"))
        report["files"] = {"count": size["S"], "bytes": source_bytes, "write_s": time.perf_counter() - t0}

        # (a) peak RSS, one process per configuration
        memory = []
        for name in ESTIMATORS:
            for mode, s in (("stream", size["S"]), ("stream", size["S_fit"]), ("in_memory", size["S_fit"])):
                got = run_child({"mode": mode, "estimator": name, "S": s, "folder": str(folder)})
                memory.append({"estimator": name, "mode": mode, "S": s, **got})
                print(f"{name} {mode} S={s}: peak {got['peak_rss_mib']:.0f} MiB, {got['wall_s']:.1f} s")
            a = np.load(folder / f"scores_stream_{name}_{size['S_fit']}.npy")
            b = np.load(folder / f"scores_in_memory_{name}_{size['S_fit']}.npy")
            big = np.load(folder / f"scores_stream_{name}_{size['S']}.npy")
            memory.append(
                {
                    "estimator": name,
                    "check": "stream equals in-memory on S_fit; the first S_fit rows of the S run equal both",
                    "max_abs_diff": float(max(np.max(np.abs(a - b)), np.max(np.abs(big[: len(a)] - b)))),
                }
            )
        report["peak_rss"] = memory

        # (b) time, streamed vs in memory, same S
        report["time"] = timing(folder, size, repeats)
        for row in report["time"]:
            print(
                f"{row['estimator']:10s} time S={row['S']}: streamed/in-memory = "
                f"{row['ratio_streamed_vs_in_memory']:.3f} ({row['median_s']})"
            )

        # (c) the CLI on one stacked file
        shutil.rmtree(folder / "sources")  # free the disk before the stacked file
        rng = np.random.default_rng(1)
        stacked_file = folder / "stacked.npy"
        shape = (size["cli_S"], size["n"], size["d"])
        mm = np.lib.format.open_memmap(stacked_file, mode="w+", dtype=np.float32, shape=shape)
        for s in range(shape[0]):
            mm[s] = rng.standard_normal(shape[1:], dtype=np.float32)
        mm.flush()
        del mm
        file_mib = stacked_file.stat().st_size / 2**20
        cli = {"file_mib": file_mib, "shape": list(shape)}
        small = folder / "small.npy"  # the floor: the same command on a file of one tiny source
        np.save(small, rng.standard_normal((1, size["n"], 4), dtype=np.float32))
        floor = run_child(
            {"mode": "cli", "file": str(small), "targets": str(folder / "targets.npy"), "folder": str(folder)}
        )
        cli["floor_peak_rss_mib"] = floor["peak_rss_mib"]
        print(f"cli floor: peak {floor['peak_rss_mib']:.0f} MiB (one [n, 4] source: the runtime itself)")
        for mode in ("cli", "cli_whole_array"):
            got = run_child(
                {
                    "mode": mode,
                    "file": str(stacked_file),
                    "targets": str(folder / "targets.npy"),
                    "folder": str(folder),
                }
            )
            cli[mode] = {
                **got,
                "peak_over_file": got["peak_rss_mib"] / file_mib,
                "above_floor_over_file": (got["peak_rss_mib"] - floor["peak_rss_mib"]) / file_mib,
            }
            print(f"{mode:15s}: peak {got['peak_rss_mib']:.0f} MiB on a {file_mib:.1f} MiB file")
        report["cli"] = cli
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    import jax

    import jaxtransfer

    report["environment"] = {
        "jaxtransfer": jaxtransfer.__version__,
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "dtype": "float32",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "OPENBLAS_NUM_THREADS": "1",
        "note": "shared 2-core machine: other agents ran at the same time; times are noisy",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
