-- The outbox relay lease and the indexes pruning reads (shared/kit/src/outbox).

-- Which relay may publish this database's outbox, and until when (milliseconds since the
-- epoch by the database's clock). One row; a relay takes it when it is free or expired.
CREATE TABLE IF NOT EXISTS outbox_relay_lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL);

INSERT INTO outbox_relay_lease (id, holder, expires_at_ms) VALUES (1, '', 0)
    ON CONFLICT (id) DO NOTHING;

-- Pruning deletes sent rows and processed ids older than the retention window.
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS processed_messages_processed_at ON processed_messages (processed_at);
