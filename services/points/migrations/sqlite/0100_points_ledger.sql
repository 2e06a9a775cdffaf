-- The points ledger: one row per paid order; a balance is the sum of a user's rows.
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.
-- SQLite: an INTEGER PRIMARY KEY is the rowid, numbered automatically.

CREATE TABLE IF NOT EXISTS points_ledger (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL,
    points BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    message_id TEXT NOT NULL,
    awarded_at TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS points_ledger_by_user ON points_ledger (user_id);
