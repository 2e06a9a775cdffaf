//! The order service as separate processes of its real binary, `order-service`, on real
//! brokers: replicas sharing one PostgreSQL database, and a crash at the failpoint between
//! the broker's confirm and the outbox mark.
//!
//! ```sh
//! ORDERFLOW_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//! ORDERFLOW_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo test -p orderflow-order --test processes
//! ```
//!
//! Each test gets a RabbitMQ virtual host and a PostgreSQL database of its own. The binary
//! is the one cargo builds for this test run; a test build carries the failpoints
//! (`orderflow_kit::failpoints`).

mod crash_after_confirm;
mod helpers;
mod replicas;
