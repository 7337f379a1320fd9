"""Progress of the slow stages: a tqdm bar on a terminal, plain log lines otherwise, or nothing.

Every slow stage of the package (extraction, training, fine-tuning, scoring,
the protocols' sources) reports through :func:`progress_bar`, whose
``enabled`` argument picks the form:

- ``True``: a tqdm bar on stderr;
- ``None`` (the default of the public functions): a tqdm bar when stderr is a
  terminal, otherwise plain lines on stderr (:class:`_LogLines`), so that a
  log file or a CI job shows what is running;
- ``False``: nothing.

The plain lines of one stage, with ``every`` seconds between them at most
(``$JAXTRANSFER_LOG_EVERY``, default 10)::

    scores: 0/7 estimator (0%), 10 s elapsed [logme]
    scores: 3/7 estimator (43%), 41 s elapsed, ETA 55 s [hscore]
    scores: done 7 estimator in 1 min 32 s

The first line comes once the stage has run ``every`` seconds (a timer
writes it, so it comes even while the first step is still running); later
lines come with the stage's own updates, at most one per ``every`` seconds
(none while no step finishes); the closing line comes when the stage ends. A
stage that ends within ``every`` seconds writes nothing at all, so quick
stages (a small extraction, a short training) do not fill the log. A stage
left before its end (an exception, a ``break``) closes with
``desc: stopped at k/total unit after T [postfix]``. ``every = 0`` writes a
line at the start, at every update and at the end.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings

__all__ = ["format_seconds", "log_every", "log_line", "progress_bar"]

_EVERY_ENV = "JAXTRANSFER_LOG_EVERY"
_DEFAULT_EVERY = 10.0


def log_every() -> float:
    """Seconds between two plain progress lines: ``$JAXTRANSFER_LOG_EVERY``, default 10.

    A value that is not a number warns and gives the default; a negative one counts as 0
    (a line at every update).
    """
    text = os.environ.get(_EVERY_ENV, "").strip()
    if not text:
        return _DEFAULT_EVERY
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        warnings.warn(
            f"{_EVERY_ENV}={text!r} is not a number of seconds; using {_DEFAULT_EVERY:g}", stacklevel=2
        )
        return _DEFAULT_EVERY
    return max(value, 0.0)


def format_seconds(seconds: float) -> str:
    """``'4.2 s'``, ``'42 s'``, ``'3 min 05 s'``, ``'2 h 03 min'``."""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def log_line(text: str, enabled: bool | None = None) -> None:
    """Write one line of progress to stderr, unless ``enabled`` is ``False``.

    For events with no steps to count (a download run by pip): printed on a
    terminal too, where a bar would have nothing to show.
    """
    if enabled is False:
        return
    print(text, file=sys.stderr, flush=True)


class _Silent:
    """What :func:`progress_bar` returns when nothing is shown: every method does nothing."""

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LogLines(_Silent):
    """Plain progress lines for a stream that is not a terminal (see the module's docstring).

    Args:
      total: number of steps (None: unknown).
      desc, unit: the stage's name and its step's name.
      every: seconds between two lines at most; 0: a line at the start and at every update.
      file: where to write (default: ``sys.stderr`` as it is when the stage starts).
    """

    def __init__(self, total: float | None, desc: str, unit: str, every: float, file=None):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.n: float = 0
        self.postfix = ""
        self._file = sys.stderr if file is None else file
        self._start = time.monotonic()
        self._last: float | None = None  # when the last line was written; None: none yet
        self._closed = False
        self._lock = threading.Lock()
        self._timer = None
        if every <= 0:
            self._write(self._progress_line(self._start), self._start)
        elif math.isfinite(every):
            self._timer = threading.Timer(every, self._first_line)
            self._timer.daemon = True
            self._timer.start()

    # ------------------------------------------------------------ the tqdm methods used by the package

    def update(self, n: float = 1) -> None:
        self.n += n
        self._tick()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)
        self._tick()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        values = dict(ordered_dict or {}) | kwargs
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())
        self._tick()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            now = time.monotonic()
            if self._last is None and now - self._start < self.every:
                return  # a quick stage: nothing written, nothing to close
            elapsed = format_seconds(now - self._start)
            if self.total is None or self.n >= self.total:
                line = f"{self.desc}: done {_count(self.n)} {self.unit} in {elapsed}"
            else:
                line = (
                    f"{self.desc}: stopped at {_count(self.n)}/{_count(self.total)} {self.unit} "
                    f"after {elapsed}{self._postfix()}"
                )
            self._write_locked(line, now)

    # ------------------------------------------------------------ lines

    def _postfix(self) -> str:
        return f" [{self.postfix}]" if self.postfix else ""

    def _progress_line(self, now: float) -> str:
        elapsed = now - self._start
        if self.total:
            share = f"{100 * self.n / self.total:.0f}%"
            text = f"{self.desc}: {_count(self.n)}/{_count(self.total)} {self.unit} ({share})"
        else:
            text = f"{self.desc}: {_count(self.n)} {self.unit}"
        text += f", {format_seconds(elapsed)} elapsed"
        if self.total and 0 < self.n < self.total:
            text += f", ETA {format_seconds(elapsed * (self.total - self.n) / self.n)}"
        return text + self._postfix()

    def _first_line(self) -> None:
        """The timer's line, once the stage has run ``every`` seconds, unless one was written."""
        with self._lock:
            if not self._closed and self._last is None:
                now = time.monotonic()
                self._write_locked(self._progress_line(now), now)

    def _tick(self) -> None:
        with self._lock:
            if self._closed or (self.total is not None and self.n >= self.total):
                return  # at the end, the closing line follows
            now = time.monotonic()
            if now - (self._start if self._last is None else self._last) >= self.every:
                self._write_locked(self._progress_line(now), now)

    def _write(self, line: str, now: float) -> None:
        with self._lock:
            self._write_locked(line, now)

    def _write_locked(self, line: str, now: float) -> None:
        self._last = now
        try:
            print(line, file=self._file, flush=True)
        except (OSError, ValueError):  # a closed or broken stream must not stop the computation
            pass


def progress_bar(total: int | None, enabled: bool | None, desc: str, unit: str = "it"):
    """A tqdm bar, plain log lines, or a silent stand-in, all with tqdm's methods.

    The result has ``update(n)``, ``set_postfix_str(s)``, ``set_postfix(**values)``
    and ``close()``, and is a context manager that closes it.

    Args:
      total: number of steps (None: unknown).
      enabled: ``True``: a tqdm bar on stderr; ``None``: a tqdm bar when stderr
        is a terminal, otherwise plain lines on stderr at most every
        :func:`log_every` seconds; ``False``: nothing.
      desc, unit: the stage's label and its step's name.
    """
    if enabled is False:
        return _Silent()
    if enabled is None and not _is_terminal(sys.stderr):
        return _LogLines(total, desc, unit, log_every())
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; this keeps bare installs working
        return _LogLines(total, desc, unit, log_every())
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
