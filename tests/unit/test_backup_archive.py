"""Where ``agentserve backup``/``restore`` find the store: DATABASE_URL's rules, no password in sight."""

from __future__ import annotations

import pytest

from memory.backup import BackupError, PostgresLocation, SqliteLocation, store_location


@pytest.mark.parametrize("url", [None, "", "   "])
def test_no_url_means_the_sqlite_file_in_the_data_dir(url: str | None) -> None:
    assert store_location(url, "/data") == SqliteLocation("/data/agentserve.db")


def test_a_sqlite_url_names_its_file() -> None:
    assert store_location("sqlite:////var/lib/agentserve/a.db", "/data") == SqliteLocation("/var/lib/agentserve/a.db")


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_a_postgres_url_is_kept_whole_but_never_shown(scheme: str) -> None:
    url = f"{scheme}://app:s3cret@db:5432/agentserve"
    location = store_location(url, "/data")
    assert location == PostgresLocation(url)
    assert "s3cret" not in repr(location) and "s3cret" not in str(location)


@pytest.mark.parametrize(
    "url", ["mysql://app:s3cret@db/x", "sqlite:///", "sqlite://host/s3cret.db", "sqlite:////a.db?mode=s3cret"]
)
def test_other_urls_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(BackupError, match=r"^DATABASE_URL must be postgresql://") as caught:
        store_location(url, "/data")
    assert "s3cret" not in str(caught.value)
