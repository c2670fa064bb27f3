"""The one error of backup and restore, and what turns other errors into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from memory.migrations import LATEST_VERSION, SchemaVersionError, pending


class BackupError(RuntimeError):
    """A backup or restore was refused or failed; the message says why (and never holds a password)."""


@contextmanager
def refusing_newer(what: str) -> Iterator[None]:
    """A schema newer than this code knows (``SchemaVersionError``) as ``BackupError`` about ``what``."""
    try:
        yield
    except SchemaVersionError as exc:
        raise BackupError(
            f"{what} has schema version {exc.version}, newer than the {LATEST_VERSION} this code knows;"
            " use a release that knows it"
        ) from None


def refuse_newer(level: int, what: str) -> None:
    with refusing_newer(what):
        pending(level)


@contextmanager
def io_errors(what: str) -> Iterator[None]:
    """File-system errors (a full disk, a missing directory) as ``BackupError``."""
    try:
        yield
    except OSError as exc:
        raise BackupError(f"{what}: {exc}") from exc
