"""The store: keys, credit events and client IPs, in SQLite (the embedded default, one process) or
PostgreSQL (any number of processes, one gateway), chosen by `[server] database`.

Everything else uses the two shapes of antex/store/interface.py through `open_store` and
`open_writer`, and never knows which database is behind them. The PostgreSQL modules (and
asyncpg) are imported only when a PostgreSQL URL is configured.
"""
from __future__ import annotations

import re

from antex.store.interface import (DAY_S, EVENT_COLUMNS, KEY_COLUMNS, TOTALS, KeyRow, Store, Writer,  # noqa: F401
                                   prune)
from antex.store.migrations import migrations  # noqa: F401
from antex.store.sqlite import QUARANTINE, SqliteStore, SqliteWriter, connect, migrate  # noqa: F401


def is_postgres(database: str) -> bool:
    """Whether `[server] database` names a PostgreSQL database (postgresql://… or postgres://…)."""
    return database.startswith(("postgresql://", "postgres://"))


def display(database: str) -> str:
    """`[server] database` as it may be shown or logged: a PostgreSQL URL without its password."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@]*@", r"\1:***@", database)


def errors(database: str) -> tuple[type[BaseException], ...]:
    """What opening or using `database` raises when the database itself fails (not a bug)."""
    if is_postgres(database):
        import asyncpg

        return OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError
    import sqlite3

    return OSError, sqlite3.Error


async def open_store(database: str, *, pool_size: int = 4) -> Store:
    """A Store on `database`, created or migrated to the latest schema first."""
    if is_postgres(database):
        from antex.store import postgres

        return postgres.PostgresStore(await postgres.connect(database, max_size=pool_size))
    return SqliteStore(await connect(database))


async def open_writer(database: str, instance: str) -> Writer:
    """The ledger's writer on `database` (already migrated by open_store). `instance` names this
    process in what it announces to the others (PostgreSQL only)."""
    if is_postgres(database):
        from antex.store import postgres

        return await postgres.PostgresWriter.open(database, instance)
    return await SqliteWriter.open(database)
