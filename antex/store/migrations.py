"""The numbered, forward-only migrations of each store, read from its schema file.

schema.sql (SQLite) and schema-postgres.sql (PostgreSQL) are split at their
`-- migration N: name` lines; each store applies the sections its database has not seen, in order,
one transaction each, and records them.
"""
from __future__ import annotations

import re
from importlib import resources

SQLITE = "schema.sql"
POSTGRES = "schema-postgres.sql"
_MIGRATION = re.compile(r"^-- migration (\d+): (.+)$", re.MULTILINE)


def migrations(schema: str = SQLITE) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every section of `schema`, in order."""
    text = resources.files("antex").joinpath(schema).read_text("utf-8")
    heads = list(_MIGRATION.finditer(text))
    found = []
    for i, head in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        found.append((int(head.group(1)), head.group(2).strip(), text[head.end():end]))
    return found
