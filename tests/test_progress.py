"""Progress of the slow stages: tqdm on a terminal, plain lines otherwise, nothing when disabled.

The plain lines run on a fake clock (``_progress.time`` replaced in that module
only), so the counts, percentages, ETAs and the spacing between lines are exact.
"""

import io
import math
import re
import threading
import time
import types

import pytest
from tqdm.auto import tqdm

from jaxtransfer import _progress
from jaxtransfer._progress import _LogLines, _Silent, format_seconds, log_every, log_line, progress_bar


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(_progress, "time", types.SimpleNamespace(monotonic=clock))
    return clock


class Terminal(io.StringIO):
    def isatty(self):
        return True


def lines(text):
    return text.splitlines()


# ---------------------------------------------------------------- which kind


def test_disabled_is_silent(capsys, monkeypatch):
    monkeypatch.setenv("JAXTRANSFER_LOG_EVERY", "0")
    bar = progress_bar(3, False, "stage", unit="img")
    assert isinstance(bar, _Silent) and not isinstance(bar, _LogLines)
    bar.update(2)
    bar.set_postfix_str("x")
    bar.set_postfix(loss=1.0)
    bar.close()
    with progress_bar(3, False, "stage") as inner:
        inner.update()
    log_line("a line", False)
    assert capsys.readouterr() == ("", "")


def test_default_off_a_terminal_is_plain_lines_on_stderr(capsys, monkeypatch):
    monkeypatch.setenv("JAXTRANSFER_LOG_EVERY", "0")
    bar = progress_bar(2, None, "stage", unit="img")
    assert isinstance(bar, _LogLines)
    bar.update(2)
    bar.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert lines(err)[0] == "stage: 0/2 img (0%), 0.0 s elapsed"
    assert re.fullmatch(r"stage: done 2 img in \d\.\d s", lines(err)[-1])


def test_default_on_a_terminal_is_tqdm(monkeypatch):
    monkeypatch.setattr(_progress.sys, "stderr", Terminal())
    bar = progress_bar(2, None, "stage")
    try:
        assert isinstance(bar, tqdm)
    finally:
        bar.close()


def test_enabled_is_tqdm_even_off_a_terminal(monkeypatch):
    monkeypatch.setattr(_progress.sys, "stderr", io.StringIO())
    with progress_bar(2, True, "stage", unit="img") as bar:
        assert isinstance(bar, tqdm)
        bar.update(1)
        bar.set_postfix_str("x")
        bar.set_postfix(loss=1.0)
    assert "stage" in _progress.sys.stderr.getvalue()


# ---------------------------------------------------------------- the plain lines


def test_lines_count_percent_eta_and_postfix(clock):
    out = io.StringIO()
    bar = _LogLines(5, "train", "epoch", every=10, file=out)
    clock.now += 3
    bar.update(1)  # 3 s in: too soon for a line
    assert out.getvalue() == ""
    clock.now += 7
    bar.update(1)  # 10 s in: 2/5, 5 s per epoch, 3 to go
    bar.set_postfix(loss="0.5000")  # the line was just written: too soon
    clock.now += 5
    bar.update(1)  # 5 s after the last line: too soon
    clock.now += 5.5
    bar.set_postfix_str("last")  # 10.5 s after the last line
    clock.now += 4.5
    bar.update(2)  # at the end: no line, the closing one follows
    bar.close()
    bar.close()  # a second close writes nothing
    assert lines(out.getvalue()) == [
        "train: 2/5 epoch (40%), 10 s elapsed, ETA 15 s",
        "train: 3/5 epoch (60%), 20 s elapsed, ETA 14 s [last]",
        "train: done 5 epoch in 25 s",
    ]


def test_every_zero_writes_the_start_and_every_update(clock):
    out = io.StringIO()
    bar = _LogLines(4, "stage", "img", every=0, file=out)
    clock.now += 1
    bar.update(1)
    clock.now += 1
    bar.set_postfix(loss=0.25, acc="90%")
    bar.update(3)
    bar.close()
    assert lines(out.getvalue()) == [
        "stage: 0/4 img (0%), 0.0 s elapsed",
        "stage: 1/4 img (25%), 1.0 s elapsed, ETA 3.0 s",
        "stage: 1/4 img (25%), 2.0 s elapsed, ETA 6.0 s [loss=0.25, acc=90%]",
        "stage: done 4 img in 2.0 s",
    ]


def test_a_quick_stage_writes_nothing(clock):
    out = io.StringIO()
    bar = _LogLines(3, "head retraining", "source", every=10, file=out)
    for _ in range(3):
        clock.now += 3
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_a_stage_as_long_as_the_interval_closes_with_a_line(clock):
    """Even if no line came before (the timer had not run yet)."""
    out = io.StringIO()
    bar = _LogLines(3, "head retraining", "source", every=10, file=out)
    clock.now += 9
    bar.update(2)
    clock.now += 1
    bar.update(1)
    bar.close()
    assert lines(out.getvalue()) == ["head retraining: done 3 source in 10 s"]


def test_an_infinite_interval_writes_nothing(clock):
    out = io.StringIO()
    bar = _LogLines(3, "stage", "img", every=math.inf, file=out)
    clock.now += 1e6
    bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_unknown_total(clock):
    out = io.StringIO()
    bar = _LogLines(None, "stage", "batch", every=0, file=out)
    clock.now += 12
    bar.update(3)
    bar.close()
    assert lines(out.getvalue()) == [
        "stage: 0 batch, 0.0 s elapsed",
        "stage: 3 batch, 12 s elapsed",
        "stage: done 3 batch in 12 s",
    ]


def test_a_stage_left_early_says_where_it_stopped(clock, monkeypatch, capsys):
    monkeypatch.setenv("JAXTRANSFER_LOG_EVERY", "60")
    with pytest.raises(RuntimeError, match="boom"), progress_bar(7, None, "scores", unit="estimator") as bar:
        bar.update(2)
        bar.set_postfix_str("knn")
        clock.now += 75
        raise RuntimeError("boom")
    assert lines(capsys.readouterr().err) == ["scores: stopped at 2/7 estimator after 1 min 15 s [knn]"]


def test_the_first_line_comes_while_the_first_step_runs():
    """A timer writes the first line once the stage has run ``every`` seconds, without an update."""
    out = io.StringIO()
    bar = _LogLines(3, "scores", "estimator", every=0.05, file=out)
    bar.set_postfix_str("logme")
    deadline = time.monotonic() + 10
    while not out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    bar.close()
    first, last = lines(out.getvalue())
    assert re.fullmatch(r"scores: 0/3 estimator \(0%\), 0\.\d s elapsed \[logme\]", first)
    assert last.startswith("scores: stopped at 0/3 estimator after ")


def test_a_stage_closed_early_cancels_its_timer():
    out = io.StringIO()
    before = threading.active_count()
    bar = _LogLines(3, "stage", "img", every=0.05, file=out)
    bar.update(3)
    bar.close()
    time.sleep(0.2)
    assert out.getvalue() == ""
    assert threading.active_count() <= before


def test_a_closed_stream_does_not_stop_the_work():
    out = io.StringIO()
    bar = _LogLines(2, "stage", "img", every=0, file=out)
    out.close()
    bar.update(1)
    bar.close()


# ---------------------------------------------------------------- the interval and the format


def test_log_every(monkeypatch):
    monkeypatch.delenv("JAXTRANSFER_LOG_EVERY", raising=False)
    assert log_every() == 10
    for text, value in [("2.5", 2.5), (" 30 ", 30.0), ("0", 0.0), ("-1", 0.0), ("", 10.0), ("inf", math.inf)]:
        monkeypatch.setenv("JAXTRANSFER_LOG_EVERY", text)
        assert log_every() == value, text
    for text in ("soon", "nan"):
        monkeypatch.setenv("JAXTRANSFER_LOG_EVERY", text)
        with pytest.warns(UserWarning, match="JAXTRANSFER_LOG_EVERY=.* is not a number of seconds; using 10"):
            assert log_every() == 10


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0 s"), (4.24, "4.2 s"), (9.96, "10 s"), (42.4, "42 s"), (59.6, "1 min 00 s"),
     (185, "3 min 05 s"), (7380, "2 h 03 min")],
)  # fmt: skip
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_log_line(capsys):
    log_line("model: downloading ...")
    log_line("on a terminal too", True)
    assert capsys.readouterr() == ("", "model: downloading ...\non a terminal too\n")
