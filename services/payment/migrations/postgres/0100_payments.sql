-- One payment decision per order.
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.

CREATE TABLE IF NOT EXISTS payments (
    order_id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    payment_id TEXT,
    message_id TEXT NOT NULL,
    decided_at TEXT NOT NULL);
