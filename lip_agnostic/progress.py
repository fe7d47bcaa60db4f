"""Progress lines for the steps that can take a while (the statistics pass, building candidates,
held-out scoring), shown on a terminal only by default.

A step prints nothing during its first ``delay`` seconds, so short runs stay
silent; after that one line on the stream is rewritten in place at most every
``interval`` seconds, and closed with its total when the step ends. Logs and
pipes get nothing unless asked (``enabled=True``).

Examples
--------
>>> import io
>>> from lip_agnostic.progress import Progress
>>> out = io.StringIO()
>>> p = Progress(True, stream=out, delay=0.0, interval=0.0)
>>> with p.step("fit statistics", unit="batch") as s:
...     for _ in range(3):
...         s.advance()
>>> out.getvalue().splitlines()[-1].startswith("lip: fit statistics: 3 batches")
True
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .errors import OptionTypeError

__all__ = ["Progress", "as_progress"]


class _Step:
    def __init__(self, owner: "Progress", name: str, total: int | None, unit: str) -> None:
        self._owner, self.name, self.total, self.unit = owner, name, total, unit
        self.done = 0
        self._start = time.perf_counter()
        self._last = -1.0
        self._shown = False

    def __enter__(self) -> "_Step":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(ok=exc[0] is None)

    def _text(self) -> str:
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        unit = self.unit if self.done == 1 and self.total is None else self.unit + ("es" if self.unit.endswith("ch") else "s")
        return f"lip: {self.name}: {count} {unit}, {time.perf_counter() - self._start:.1f} s"

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units of work; redraw the line when it is due."""
        self.done += n
        o = self._owner
        if not o.enabled:
            return
        now = time.perf_counter()
        if now - self._start < o.delay or now - self._last < o.interval:
            return
        self._last = now
        self._shown = True
        o.stream.write("\r" + self._text())
        o.stream.flush()

    def close(self, ok: bool = True) -> None:
        """End the step: the line gets its final count (only if it was shown)."""
        o = self._owner
        if o.enabled and self._shown:
            o.stream.write("\r" + self._text() + ("" if ok else " (stopped)") + "\n")
            o.stream.flush()
            self._shown = False


class Progress:
    """Where and when progress is shown.

    Parameters
    ----------
    enabled : bool or None
        ``None`` (default): only when ``stream`` is a terminal.
    stream : file, optional
        Default ``sys.stderr``.
    delay : float
        Seconds a step runs before anything is shown.
    interval : float
        Least seconds between two redraws.
    """

    def __init__(self, enabled: bool | None = None, *, stream: TextIO | None = None, delay: float = 2.0,
                 interval: float = 0.5) -> None:
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        self.enabled = bool(enabled)
        self.delay, self.interval = float(delay), float(interval)

    def step(self, name: str, total: int | None = None, *, unit: str = "batch") -> _Step:
        """A step of ``total`` units (None: unknown); use it as a context manager."""
        return _Step(self, name, total, unit)


def as_progress(value: Any) -> Progress:
    """``progress=``: None (on a terminal only), True/False, or a :class:`Progress`."""
    if isinstance(value, Progress):
        return value
    if value is None or isinstance(value, bool):
        return Progress(value)
    raise OptionTypeError(f"progress must be None (on a terminal only), True, False or a Progress; "
                          f"got {type(value).__name__}")
