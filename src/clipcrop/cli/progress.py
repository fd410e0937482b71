"""The command's progress bar: rich, on stderr, only when a person is watching.

One bar for every subcommand that works through a list (``crop`` over images, ``evaluate`` over
samples); the library itself never draws one (:mod:`clipcrop.io.progress`).
"""

from __future__ import annotations

import os


class ProgressBar:
    """``with ProgressBar("cropping", total, enabled) as bar: ... bar.advance()``.

    Draws nothing when ``enabled`` is false or the terminal is ``dumb``; the bar is transient
    (gone once done) and shows done / total and the time remaining.
    """

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total = label, total
        self.enabled = enabled and os.environ.get("TERM") != "dumb"
        self._progress = None
        self._task = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._progress = Progress(
                self.label,
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
