"""PostgreSQL fixtures shared by the contract and Serve tiers: fresh databases on the real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

ADMIN_DSNS = [
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/test",
]


def _with_db(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at ``dbname``, as a ``postgresql://`` URL (what DATABASE_URL holds)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    auth = quote(str(params.get("user", "")), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A DSN of a role allowed to create databases, connected to a maintenance database."""
    candidates = [os.environ["TEST_POSTGRES_ADMIN_DSN"]] if os.environ.get("TEST_POSTGRES_ADMIN_DSN") else ADMIN_DSNS
    errors = []
    for dsn in candidates:
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return dsn
        except psycopg.Error as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    reason = "PostgreSQL is unreachable for the contract tests: " + "; ".join(errors)
    pytest.fail(reason + " (`make test` starts it)", pytrace=False)


@pytest.fixture(scope="session")
def make_pg_database(pg_admin_dsn: str) -> Iterator[Callable[[], str]]:
    """Create empty databases on demand (DSNs returned); all are dropped at session end."""
    created: list[str] = []

    def make() -> str:
        name = f"agentserve_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_db(pg_admin_dsn, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
