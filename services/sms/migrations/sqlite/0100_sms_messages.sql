-- One row per order texted, with the instance that sent it.
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.
-- SQLite: an INTEGER PRIMARY KEY is the rowid, numbered automatically.

CREATE TABLE IF NOT EXISTS sms_messages (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    phone TEXT NOT NULL,
    text TEXT NOT NULL,
    instance TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sent_at TEXT NOT NULL);
