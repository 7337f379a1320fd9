"""bench/bench_scale.py: its validation-share measurement (on a fake clock) and a tiny run of it."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Clock:
    """A fake ``time.perf_counter`` that the timed calls advance."""

    def __init__(self):
        self.now = 0.0
        self.calls = []

    def __call__(self):
        return self.now


def test_share_is_the_median_of_interleaved_per_round_ratios(bench, monkeypatch):
    clock = _Clock()
    slow = {3, 4}  # rounds (counted from 0) under load: both calls of the round 5x slower

    def timed(name, cost):
        def fn():
            rounds = sum(c == name for c in clock.calls) - 1  # the first call is the warm-up
            clock.calls.append(name)
            clock.now += cost * (5 if rounds in slow else 1)

        return fn

    monkeypatch.setattr(bench.time, "perf_counter", clock)
    monkeypatch.setattr(bench.time, "process_time", clock)  # CPU time: the same costs here
    out = bench._interleaved_share(timed("public", 10.0), timed("core", 8.0), repeats=7)
    # every round's share is 1 − 8/10, load spikes or not
    assert out["share"] == pytest.approx(0.2, abs=1e-12)
    assert out["share_quartiles"] == pytest.approx([0.2, 0.2], abs=1e-12)
    assert out["cpu_share"] == pytest.approx(0.2, abs=1e-12)
    assert (out["public_s"], out["core_s"], out["overhead_s"], out["repeats"]) == (10.0, 8.0, 2.0, 7)
    # warm-up once each, then the order alternates round by round
    assert clock.calls[:6] == ["public", "core", "public", "core", "core", "public"]
    assert len(clock.calls) == 2 + 2 * 7


def test_validation_share_tiny_run(bench):
    out = bench.validation_share(n=200, d=8, repeats=3)
    assert sorted(out) == ["linear_mse", "logme", "nce"]
    for row in out.values():
        assert row["public_s"] > 0 and row["core_s"] > 0 and row["repeats"] == 3
        assert row["share"] <= 1 and row["share_quartiles"][0] <= row["share_quartiles"][1]
