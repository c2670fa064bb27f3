"""Backup and restore of the conversation store and the vector memory, as one portable archive.

An archive is a gzipped tar: ``manifest.json`` (format and package versions, the
schema migration level, row counts, the SHA-256 of every other member), one
JSON-lines file per conversation-store table (timestamps as text, JSON columns
decoded, so a SQLite backup restores into PostgreSQL and back) and one Arrow IPC
stream per LanceDB table, vectors included (``archive``).

A backup is a consistent snapshot taken while the platform serves traffic: SQLite
through its online backup API, PostgreSQL in one REPEATABLE READ READ ONLY
transaction (``sql``), each LanceDB table read at the version it had right after
that snapshot (``vectors``). A restore checks the whole archive before it touches
the target and writes only into an empty target, all or nothing.
"""

from memory.backup.archive import Manifest, verify_backup
from memory.backup.create import create_backup
from memory.backup.errors import BackupError
from memory.backup.restore import restore_backup
from memory.backup.sql import store_location
from memory.factory import PostgresLocation, SqliteLocation, StoreLocation

__all__ = [
    "BackupError",
    "Manifest",
    "PostgresLocation",
    "SqliteLocation",
    "StoreLocation",
    "create_backup",
    "restore_backup",
    "store_location",
    "verify_backup",
]
