-- The tables every service has: idempotency record, persisted counters, outbox.
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.
-- Versions below 100 are the kit's; each service numbers its own from 100.

-- The idempotency record: a message id here means its effect is already committed.
CREATE TABLE IF NOT EXISTS processed_messages (
    message_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    processed_at TEXT NOT NULL);

-- Persisted counters (duplicates ignored, dead letters): they survive restarts, so a
-- reconciliation after a crash still adds up.
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL);

-- The transactional outbox: rows written with the business change, published later.
CREATE TABLE IF NOT EXISTS outbox (
    seq BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    message_key TEXT NOT NULL,
    headers TEXT NOT NULL,
    payload BYTEA NOT NULL,
    published_at TEXT NOT NULL,
    sent_at TEXT);

CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;
