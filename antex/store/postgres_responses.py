"""Stored responses' statements in PostgreSQL's dialect: the same names, parameters and results as
antex/responses_store.py's SQLite ones (ResponseStore takes this module as its dialect)."""
from __future__ import annotations

from antex.responses_store import MAX_CHAIN

INSERT_RESPONSE = ("INSERT INTO responses (id, key_id, created_at, touched_at, previous_response_id, bytes, body) "
                   "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING")
INSERT_ITEM = ("INSERT INTO response_items (response_id, position, is_output, key_id, item_id, item) "
               "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (response_id, position) DO NOTHING")
TOUCH_CHAIN = ("UPDATE responses SET touched_at = GREATEST(touched_at, $1) "
               "WHERE key_id = $2 AND id IN (SELECT jsonb_array_elements_text($3::jsonb))")
EVICT_OLDEST = ("DELETE FROM responses WHERE id = (SELECT r.id FROM responses r JOIN response_totals t "
                "ON t.key_id = r.key_id WHERE r.key_id = $1 AND r.id <> $2 AND (t.responses > $3 OR t.bytes > $4) "
                "ORDER BY r.touched_at, r.id LIMIT 1)")
EVICT_ALL = ("DELETE FROM responses WHERE id IN (SELECT id FROM ("
             "SELECT id, ROW_NUMBER() OVER newest AS n, SUM(bytes) OVER newest AS running FROM responses "
             "WHERE key_id IN (SELECT key_id FROM response_totals WHERE responses > $1 OR bytes > $2) "
             "WINDOW newest AS (PARTITION BY key_id ORDER BY touched_at DESC, id DESC)) AS ranked "
             "WHERE n > 1 AND (n > $1 OR running > $2))")
DELETE_RESPONSE = "DELETE FROM responses WHERE key_id = $1 AND id = $2"
PRUNE = "DELETE FROM responses WHERE touched_at <= $1"
GET_BODY = "SELECT body FROM responses WHERE id = $1 AND key_id = $2 AND touched_at > $3"
GET_ITEMS = ("SELECT i.item FROM response_items i JOIN responses r ON r.id = i.response_id "
             "WHERE i.response_id = $1 AND i.is_output = $2 AND r.key_id = $3 AND r.touched_at > $4 ORDER BY i.position")
FIND_ITEMS = ("SELECT i.item_id, i.item FROM response_items i JOIN responses r ON r.id = i.response_id "
              "WHERE i.key_id = $1 AND i.item_id IN (SELECT jsonb_array_elements_text($2::jsonb)) AND r.touched_at > $3 "
              "ORDER BY r.touched_at, i.position")
CONVERSATION = f"""
WITH RECURSIVE chain (id, previous, depth) AS (
    SELECT id, previous_response_id, 0 FROM responses WHERE id = $1 AND key_id = $2 AND touched_at > $3
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1 FROM responses r JOIN chain c ON r.id = c.previous
    WHERE r.key_id = $4 AND r.touched_at > $5 AND c.depth < {MAX_CHAIN}
)
SELECT c.id, c.previous, c.depth, i.item FROM chain c LEFT JOIN response_items i ON i.response_id = c.id
ORDER BY c.depth DESC, i.position"""
