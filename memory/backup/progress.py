"""Progress lines for long backups and restores."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]
PROGRESS_EVERY = 10_000


class RowCounter:
    """Rows done, reported every ``every`` rows and at the end."""

    def __init__(self, progress: Progress | None, what: str, every: int) -> None:
        self.progress, self.what, self.every, self.n = progress, what, every, 0

    def add(self, n: int) -> None:
        before, self.n = self.n, self.n + n
        if self.progress is not None and before // self.every != self.n // self.every:
            self.progress(f"{self.what}: {self.n} rows")

    def done(self, verb: str) -> int:
        if self.progress is not None:
            self.progress(f"{self.what}: {self.n} rows {verb}")
        return self.n
