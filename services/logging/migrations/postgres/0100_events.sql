-- The event log: one row per message id.
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.

-- `published_us` (microseconds since the epoch) orders a journey; the text column is
-- for people. `payload` and `headers` are JSON text.
CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    topic TEXT NOT NULL,
    published_at TEXT NOT NULL,
    published_us BIGINT NOT NULL,
    headers TEXT NOT NULL,
    payload TEXT NOT NULL,
    logged_at TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS events_by_order ON events (order_id, published_us);
