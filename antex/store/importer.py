"""`antex import FILE.db`: copy an SQLite database (keys, credit events, daily totals, client IPs)
into the configured PostgreSQL store, so a single-process gateway can grow into several.

Idempotent: keys keep their ids (their events point at them) and a key already there with the
same hash is left as it is; every event gets the journal id `import-<file id>/<event id>`, where
the file id is a random number the SQLite file keeps in its `meta` table (`export_id`) from the first import on,
so running it twice inserts nothing twice, and two different files never collide.
"""
from __future__ import annotations

from dataclasses import dataclass

from antex.store.interface import KeyRow
from antex.store.postgres import PostgresStore
from antex.store.sqlite import SqliteStore

CHUNK_ROWS = 5000


class ImportConflict(Exception):
    """The target holds a different key under a source key's id or name: nothing was imported."""


@dataclass
class Imported:
    keys: int = 0
    events: int = 0
    daily_totals: int = 0
    ips: int = 0


async def import_sqlite(source: SqliteStore, target: PostgresStore) -> Imported:
    """Copy what `source` holds into `target`; returns what was new there."""
    done = Imported()
    file_id = await source.export_id()
    rows = await source.keys_for_export()
    await _check_keys([row for row, _ in rows], target)
    for row, updated_at in rows:
        done.keys += await target.insert_imported_key(row, updated_at)
    async for chunk in source.event_chunks_for_export(CHUNK_ROWS):
        done.events += await target.insert_events([r[1:] for r in chunk], [f"import-{file_id}/{r[0]}" for r in chunk])
    done.daily_totals = await target.insert_daily_totals(await source.daily_totals_for_export())
    ips = await source.ips_for_export()
    before = await target.count_ips()
    await target.upsert_ips(ips)
    done.ips = await target.count_ips() - before
    return done


async def _check_keys(rows: list[KeyRow], target: PostgresStore) -> None:
    there = {row.id: row for row in await target.all_keys()}
    names = {row.name: row for row in there.values()}
    for row in rows:
        same_id, same_name = there.get(row.id), names.get(row.name)
        if same_id is not None and same_id.hash != row.hash:
            raise ImportConflict(f"Key id {row.id} ({row.name!r}) is already a different key ({same_id.name!r}) in the "
                                 f"target database. Import into a fresh PostgreSQL database.")
        if same_name is not None and same_name.hash != row.hash:
            raise ImportConflict(f"A different key named {row.name!r} already exists in the target database. "
                                 f"Rename one of them first.")
