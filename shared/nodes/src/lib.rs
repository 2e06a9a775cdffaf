//! # orderflow-nodes
//!
//! Broker processes of one's own, to take down on purpose: the durability tests of
//! `shared/broker` and the `orderflow chaos` command kill them with SIGKILL, restart them
//! on the same ports and data, and (RabbitMQ) raise a memory alarm on them. The shared
//! brokers (RabbitMQ `rabbit@…` on 5672, the tansu that `scripts/test.sh` starts) are never
//! touched: every node here has its own name, ports, data and logs under a directory the
//! caller gives.
//!
//! | type | what it runs | file |
//! | --- | --- | --- |
//! | [`RabbitNode`] | a RabbitMQ node through the installed `rabbitmq-server` scripts, no plugins | `rabbit.rs` |
//! | [`TansuNode`] | a tansu broker storing to SQLite in its own directory | `tansu.rs` |
//!
//! Beside them: `ports.rs` (loopback ports that stay free across a restart), `probe.rs`
//! (waiting until a broker really accepts clients) and `process.rs` (killing a process
//! that is not our direct child, and the tail of a log for error messages).
//!
//! Both node types kill their process when dropped, so a panicking test leaves nothing
//! running. Neither talks a broker protocol beyond the handshake that proves it is up:
//! clients are `orderflow-broker`'s.

mod ports;
mod probe;
mod process;
mod rabbit;
mod tansu;

pub use ports::free_port;
pub use rabbit::RabbitNode;
pub use tansu::TansuNode;
