-- Antex database schema: the one source of truth.
-- Each "-- migration N: name" section is applied once, in order, inside a transaction, and
-- recorded in PRAGMA user_version and the migrations table. Migrations are forward-only:
-- never edit a section that has shipped; add a new one below it.

-- migration 1: initial
CREATE TABLE migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  REAL NOT NULL
);

-- Keys are stored as a SHA-256 hash plus a short visible prefix; the key itself never is.
CREATE TABLE keys (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL UNIQUE,
    plan          TEXT NOT NULL,
    limits        TEXT NOT NULL DEFAULT '{}',   -- JSON: per-key overrides of the plan's limits
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'quarantined')),
    status_reason TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX keys_prefix ON keys (prefix);

-- One row per metered request. Credits are integer micro-credits (credits x 1e6).
CREATE TABLE events (
    id                    INTEGER PRIMARY KEY,
    key_id                INTEGER NOT NULL REFERENCES keys (id),
    ts                    REAL NOT NULL,          -- unix seconds when the charge was settled
    model                 TEXT NOT NULL,
    endpoint              TEXT NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    micro_credits         INTEGER NOT NULL,
    request_id            TEXT,                   -- the upstream request-id, when there was one
    outcome               TEXT NOT NULL           -- complete, client_disconnected, upstream_error, interrupted
);
CREATE INDEX events_key_ts ON events (key_id, ts);

-- Distinct client IPs per key, for the plan's max_ips over 24 h.
CREATE TABLE key_ips (
    key_id    INTEGER NOT NULL REFERENCES keys (id),
    ip        TEXT NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (key_id, ip)
) WITHOUT ROWID;

-- A counter bumped on every change to keys, so a running server notices CLI changes cheaply.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (name, value) VALUES ('keys_version', 0);
CREATE TRIGGER keys_inserted AFTER INSERT ON keys
    BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_version'; END;
CREATE TRIGGER keys_updated AFTER UPDATE ON keys
    BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_version'; END;
CREATE TRIGGER keys_deleted AFTER DELETE ON keys
    BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_version'; END;

-- migration 2: write-ahead journal
-- Every admitted request is journaled before it goes upstream and removed, in the same
-- transaction that writes its credit event, when it settles. Rows left after a crash are
-- settled at the next start: with the usage already seen, or an estimate marked as such.
CREATE TABLE inflight (
    id                  TEXT PRIMARY KEY,
    key_id              INTEGER NOT NULL REFERENCES keys (id),
    started_at          REAL NOT NULL,
    model               TEXT NOT NULL,
    endpoint            TEXT NOT NULL,
    estimated_input     INTEGER NOT NULL,   -- input tokens guessed from the request's size
    usage               TEXT                -- JSON usage from message_start, once seen
);
ALTER TABLE events ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;

-- migration 3: journal file
-- The write-ahead journal moved to an append-only file beside the database (antex/journal.py):
-- appending a line costs far less than a commit per request. The credit events' transaction
-- records which journal ids it settled, so a crash between that commit and the journal's
-- "settled" line charges nobody twice. Rows an older version left in `inflight` are still
-- settled at the next start; nothing writes that table any more.
CREATE TABLE journal_settled (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    ids  TEXT NOT NULL   -- JSON list: the journal ids settled by the last committed batch
);
INSERT INTO journal_settled (id, ids) VALUES (1, '[]');

-- migration 4: server tool use
-- Anthropic bills its server tools per use (web search per search); each credit event records
-- the uses it was charged for, from usage.server_tool_use.
ALTER TABLE events ADD COLUMN web_search_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN web_fetch_requests INTEGER NOT NULL DEFAULT 0;

-- migration 5: stored responses
-- POST /v1/responses keeps each response unless the request says "store": false (OpenAI's
-- default is to store): the response as GET returns it, and its input and output items, which
-- item_reference and previous_response_id point at. Scoped to the key that made it; kept for
-- [responses] retention after it was made or last continued, then pruned.
CREATE TABLE responses (
    id                   TEXT PRIMARY KEY,      -- resp_…
    key_id               INTEGER NOT NULL REFERENCES keys (id),
    created_at           REAL NOT NULL,
    touched_at           REAL NOT NULL,         -- made, or continued by a later response
    previous_response_id TEXT,
    bytes                INTEGER NOT NULL,      -- JSON of the body and the items, for the per-key bound
    body                 TEXT NOT NULL          -- JSON: the response object
);
CREATE INDEX responses_key_touched ON responses (key_id, touched_at);
CREATE INDEX responses_touched ON responses (touched_at);
CREATE TABLE response_items (
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,               -- the input items first, then the output
    is_output   INTEGER NOT NULL,
    key_id      INTEGER NOT NULL,
    item_id     TEXT NOT NULL,
    item        TEXT NOT NULL,                  -- JSON
    PRIMARY KEY (response_id, position)
) WITHOUT ROWID;
CREATE INDEX response_items_key_item ON response_items (key_id, item_id);
-- Each key's stored responses and bytes, kept by triggers, so the per-key bounds are checked
-- without counting rows.
CREATE TABLE response_totals (
    key_id    INTEGER PRIMARY KEY,
    responses INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
CREATE TRIGGER responses_counted AFTER INSERT ON responses BEGIN
    INSERT INTO response_totals (key_id, responses, bytes) VALUES (new.key_id, 1, new.bytes)
        ON CONFLICT (key_id) DO UPDATE SET responses = responses + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER responses_uncounted AFTER DELETE ON responses BEGIN
    UPDATE response_totals SET responses = responses - 1, bytes = bytes - old.bytes WHERE key_id = old.key_id;
END;

-- migration 6: upstream pool
-- Which upstream of the pool answered each metered request (NULL: none did, or before the pool).
ALTER TABLE events ADD COLUMN upstream TEXT;

-- migration 7: retention
-- Raw credit events are kept for [events] retention; older whole days are folded into one
-- row per key, model and UTC day (`day` is that midnight in unix seconds), so exports still add
-- up. Client IPs are forgotten once no limit looks at them (24 h). The indexes serve the prune.
CREATE TABLE daily_usage (
    key_id                INTEGER NOT NULL REFERENCES keys (id),
    day                   REAL NOT NULL,
    model                 TEXT NOT NULL,
    requests              INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_write_5m_tokens INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    web_search_requests   INTEGER NOT NULL,
    web_fetch_requests    INTEGER NOT NULL,
    micro_credits         INTEGER NOT NULL,
    PRIMARY KEY (key_id, day, model)
) WITHOUT ROWID;
CREATE INDEX events_ts ON events (ts);
CREATE INDEX key_ips_last_seen ON key_ips (last_seen);
