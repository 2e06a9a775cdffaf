-- The simulated gateway's own books (see src/gateway.rs).
-- IF NOT EXISTS: a database made before migrations existed (these statements then ran
-- inline at every start) adopts this file instead of failing on tables it already has.

-- One row per idempotency key: a second request with the same key reads this row back
-- instead of charging again. `outcome` is `succeeded` or `failed`.
CREATE TABLE IF NOT EXISTS gateway_charges (
    idempotency_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    payment_id TEXT,
    decided_at TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS gateway_charges_by_order ON gateway_charges (order_id);
