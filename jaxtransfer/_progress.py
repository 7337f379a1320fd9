"""Progress bars for the slow stages (extraction, training, scoring), or a silent stand-in."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


class _Silent:
    """What :func:`progress_bar` returns when no bar is shown: every method does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, enabled: bool | None, desc: str, unit: str = "it"):
    """A tqdm bar, or a silent stand-in with the same methods.

    Args:
      total: number of steps (None: unknown).
      enabled: show it; ``None`` shows it when stderr is a terminal.
      desc, unit: the bar's label and step name.
    """
    enabled = sys.stderr.isatty() if enabled is None else enabled
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; this keeps bare installs working
        tqdm = None
    if not enabled or tqdm is None:
        return _Silent()
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
