-- The order service's tables: orders, their lines, their status history.
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.

CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    phone TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    status TEXT NOT NULL,
    placed_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_fingerprint TEXT);

CREATE TABLE IF NOT EXISTS order_items (
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    line_no BIGINT NOT NULL,
    sku TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    unit_price_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, line_no));

CREATE TABLE IF NOT EXISTS order_history (
    seq BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    status TEXT NOT NULL,
    event TEXT NOT NULL,
    message_id TEXT,
    at TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS order_history_by_order ON order_history (order_id, seq);
