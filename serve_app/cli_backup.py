"""``agentserve backup DEST`` and ``agentserve restore SRC``: the conversation store and the vector memory."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import ValidationError

from serve_app.settings import Settings

if TYPE_CHECKING:
    from memory.backup import Manifest, StoreLocation

EXIT_REFUSED = 2


def _targets(args: argparse.Namespace) -> tuple[StoreLocation, str]:
    """The store and LanceDB URI: the flags, else DATABASE_URL, LANCEDB_URI and AGENTSERVE_DATA_DIR."""
    from memory.backup import store_location  # NOTE: imported here: psycopg and lancedb are slow to import

    settings = Settings()
    data_dir = args.data_dir or settings.agentserve_data_dir
    url = args.database_url
    if url is None and settings.database_url is not None:
        url = settings.database_url.get_secret_value()
    lancedb_uri = args.lancedb_uri or settings.lancedb_uri or os.path.join(data_dir, "lancedb")
    return store_location(url, data_dir), lancedb_uri


def _progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    return None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def _summary(manifest: Manifest) -> str:
    rows = ", ".join(f"{t} {i.rows}" for t, i in manifest.tables.items())
    memories = sum(i.rows for i in manifest.vector_tables.values())
    return (f"schema version {manifest.schema_version} ({manifest.source}); {rows}; "
            f"{memories} memories in {len(manifest.vector_tables)} vector tables")  # fmt: skip


def cmd_backup(args: argparse.Namespace) -> int:
    from memory.backup import create_backup

    store, lancedb_uri = _targets(args)
    manifest = create_backup(args.dest, store, lancedb_uri, overwrite=args.force, progress=_progress(args))
    print(f"backed up to {args.dest}: {_summary(manifest)}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from memory.backup import restore_backup, verify_backup

    if args.verify_only:
        print(f"{args.src} is intact: {_summary(verify_backup(args.src))}")
        return 0
    store, lancedb_uri = _targets(args)
    manifest = restore_backup(args.src, store, lancedb_uri, progress=_progress(args))
    print(f"restored {args.src}: {_summary(manifest)}")
    return 0


def _guarded(args: argparse.Namespace) -> int:
    """A refusal or failure as one line on stderr and exit status 2, never a traceback (nor a password)."""
    from memory.backup import BackupError

    try:
        return int(args.command_func(args))
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except ValidationError as exc:  # the settings, e.g. AGENTSERVE_ENV=production without its URLs
        print(f"error: settings: {exc.errors()[0]['msg']}", file=sys.stderr)
    return EXIT_REFUSED


def _add_location_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None,
                        help="the conversation store (default: $DATABASE_URL; unset: SQLite in the data dir); "
                             "prefer the variable: a flag's password shows in the process list")  # fmt: skip
    parser.add_argument("--data-dir", default=None, help="default: $AGENTSERVE_DATA_DIR (~/.agentserve)")
    parser.add_argument("--lancedb-uri", default=None, help="the vector memory (default: $LANCEDB_URI, "
                                                            "else <data dir>/lancedb)")  # fmt: skip
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def add_backup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``backup`` and ``restore`` on the CLI's subparsers."""
    backup = sub.add_parser("backup", help="archive the conversation store and the vector memory (while serving)")
    backup.add_argument("dest", help="the archive to write (.tar.gz)")
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    _add_location_flags(backup)
    backup.set_defaults(func=_guarded, command_func=cmd_backup)

    restore = sub.add_parser("restore", help="restore an archive into an empty store and vector memory")
    restore.add_argument("src", help="the archive written by `agentserve backup`")
    restore.add_argument("--verify-only", action="store_true", help="check the archive, restore nothing")
    _add_location_flags(restore)
    restore.set_defaults(func=_guarded, command_func=cmd_restore)
