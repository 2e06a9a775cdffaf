-- The fake SMS gateway's own books (see src/gateway.rs): one row per text it actually
-- dispatched, appended by the gateway itself, outside the SMS service's transaction.
-- Deliberately NOT unique per order: a second text for one order is a second row here,
-- so reconciliation can see it. (The `sms_messages` table, UNIQUE per order, cannot.)
-- SQLite: an INTEGER PRIMARY KEY is the rowid, numbered automatically.

CREATE TABLE IF NOT EXISTS sms_gateway_texts (
    id INTEGER PRIMARY KEY,
    order_id TEXT NOT NULL,
    phone TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS sms_gateway_texts_by_order ON sms_gateway_texts (order_id);
