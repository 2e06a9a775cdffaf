-- Poison by crash: how often a message's handler was started on a delivery that may have
-- been handed out before, and has not come back from since. Written (committed) before
-- such a handler runs and deleted when it returns, so a row that keeps growing means the
-- message keeps killing or hanging its consumer; past a limit the consumer dead-letters
-- it. First deliveries never touch this table (see shared/kit/src/consumer/crashes.rs).
CREATE TABLE IF NOT EXISTS consumer_crashes (
    consumer_group TEXT NOT NULL,
    message_id TEXT NOT NULL,
    starts BIGINT NOT NULL,
    last_started_at TEXT NOT NULL,
    PRIMARY KEY (consumer_group, message_id));
