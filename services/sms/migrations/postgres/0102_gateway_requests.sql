-- The fake SMS gateway's idempotency keys (see src/gateway.rs): one row per key, the
-- first answer. A request whose key is here gets that answer back and nothing is sent.
-- Written in the same transaction as the text it lets through (`sms_gateway_texts`), so
-- a key is never recorded without its text, nor a text without its key.

CREATE TABLE IF NOT EXISTS sms_gateway_requests (
    idempotency_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    sent_at TEXT NOT NULL);
