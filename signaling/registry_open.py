"""Opening the registry the ``db`` setting names (the server's and the admin command's way).

Apart from :mod:`signaling.registry` so that the PostgreSQL backend, which builds on that
module, is imported only here, and only when a ``postgresql://`` URL asks for it.
"""

from __future__ import annotations

from signaling.registry import MemoryRegistry, Registry, SQLiteRegistry, is_database_url


def open_registry(db: str) -> Registry:
    """``""``: in memory; a ``postgresql://`` URL: that database
    (:class:`~signaling.registry_postgres.PostgresRegistry`); else an SQLite file
    (``":memory:"``: SQLite in memory). Either database is migrated to the latest schema."""
    if db == "":
        return MemoryRegistry()
    if is_database_url(db):
        from signaling.registry_postgres import PostgresRegistry  # psycopg only when used

        return PostgresRegistry(db)
    return SQLiteRegistry(db)
