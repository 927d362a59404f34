"""The registry's schema as numbered migrations, for SQLite and PostgreSQL alike.

A database lists the migrations applied to it in ``schema_migrations``. Opening a registry
applies the missing ones in order, in one transaction, under a lock (SQLite's write lock, a
PostgreSQL advisory lock), so that instances starting together migrate once and a failed
migration leaves the database as it was. A database that has a version this code does not know
is refused: it was written by a newer server, and running older code on it could undo or
misread what the newer one relies on. Nothing is ever downgraded.

Version 1 is the schema of the SQLite files made before there were versions; its tables are
created ``IF NOT EXISTS``, so such a file counts as version 0 and takes version 1 as a no-op.
PostgreSQL's version 2 also installs the triggers that tell every instance about each change
(:mod:`signaling.registry_postgres`): they are part of the schema, not of one server's start.
Version 3 adds the registration rates every instance shares (``allowances``); no trigger
announces them: each take goes to the database, which alone decides.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from signaling.errors import ConfigError

CHANNEL = "voice_registry"  # PostgreSQL NOTIFY channel of the change triggers


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    why: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_PG_NOTIFY = f"""
CREATE OR REPLACE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    PERFORM pg_notify('{CHANNEL}', json_build_object(
      'table', TG_TABLE_NAME, 'op', 'delete', 'row', to_jsonb(OLD))::text);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    PERFORM pg_notify('{CHANNEL}', json_build_object(
      'table', TG_TABLE_NAME, 'op', 'upsert', 'row', to_jsonb(NEW))::text);
  END IF;
  RETURN NULL;
END $$
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "usernames and their keys; invitations, stored as SHA-256 digests",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS users ("
            " name TEXT PRIMARY KEY, key BLOB NOT NULL,"
            " created INTEGER NOT NULL DEFAULT (strftime('%s','now')))",
            "CREATE TABLE IF NOT EXISTS invites ("
            " digest BLOB PRIMARY KEY, user TEXT, expires REAL NOT NULL)",
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS users ("
            " name TEXT PRIMARY KEY, key BYTEA NOT NULL,"
            " created BIGINT NOT NULL DEFAULT extract(epoch FROM now())::bigint)",
            "CREATE TABLE IF NOT EXISTS invites ("
            ' digest BYTEA PRIMARY KEY, "user" TEXT, expires DOUBLE PRECISION NOT NULL)',
        ),
    ),
    Migration(
        2,
        "reserved names found by index; PostgreSQL: every change announced to all instances",
        sqlite=("CREATE INDEX IF NOT EXISTS invites_user ON invites (user, expires)",),
        postgres=(
            'CREATE INDEX IF NOT EXISTS invites_user ON invites ("user", expires)',
            _PG_NOTIFY,
            "CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users"
            " FOR EACH ROW EXECUTE FUNCTION registry_changed()",
            "CREATE TRIGGER invites_changed AFTER INSERT OR UPDATE OR DELETE ON invites"
            " FOR EACH ROW EXECUTE FUNCTION registry_changed()",
        ),
    ),
    Migration(
        3,
        "registration rates shared by every instance: a bucket's theoretical arrival time",
        sqlite=(
            "CREATE TABLE allowances (bucket TEXT PRIMARY KEY, arrival REAL NOT NULL)",
            "CREATE INDEX allowances_arrival ON allowances (arrival)",
        ),
        postgres=(
            "CREATE TABLE allowances (bucket TEXT PRIMARY KEY, arrival DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX allowances_arrival ON allowances (arrival)",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version
VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
)


def pending(applied: int, where: str) -> tuple[Migration, ...]:
    """The migrations a database at version ``applied`` still needs; ConfigError if that
    version is newer than this code (``where`` names the database, without secrets)."""
    if applied > LATEST:
        raise ConfigError(
            f"db: the registry {where} has schema version {applied}, but this server knows "
            f"versions up to {LATEST}: run the newer server it was made by (a registry is "
            "never downgraded)"
        )
    return tuple(m for m in MIGRATIONS if m.version > applied)


def migrate_sqlite(db: sqlite3.Connection, where: str) -> int:
    """Bring an SQLite registry (autocommit connection) to :data:`LATEST`; the version it had."""
    db.execute("BEGIN IMMEDIATE")  # the write lock: a second process waits, then finds it done
    try:
        db.execute(VERSIONS_TABLE)
        row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        applied = int(row[0])
        for migration in pending(applied, where):
            for statement in migration.sqlite:
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, applied) VALUES (?, ?)",
                (migration.version, time.time()),
            )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return applied
