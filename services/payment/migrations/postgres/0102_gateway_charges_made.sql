-- The simulated gateway's record of the charges it actually made (see src/gateway.rs):
-- one row appended per charge, in the same transaction as the idempotency key that let it
-- through. Deliberately NOT unique per order or key: the key table (`gateway_charges`)
-- holds one row per key by construction, so only a record independent of it can show a
-- card charged twice (a key the gateway forgot, a key that differed between requests).

CREATE TABLE IF NOT EXISTS gateway_charges_made (
    id BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    payment_id TEXT NOT NULL,
    charged_at TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS gateway_charges_made_by_order ON gateway_charges_made (order_id);
