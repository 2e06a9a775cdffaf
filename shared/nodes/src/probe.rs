//! Is the broker up? A listening socket is not enough for RabbitMQ (the answer must be an
//! AMQP `connection.start`), and a node that died while booting must fail the wait at
//! once with its log, not at the deadline.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The AMQP 0-9-1 protocol header a client opens with.
const AMQP_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
/// The first byte of the server's reply when it speaks AMQP: a method frame
/// (`connection.start`).
const METHOD_FRAME: u8 = 1;

/// True when something accepts TCP connections on `127.0.0.1:port`.
pub async fn listens(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// True when an AMQP 0-9-1 server on `127.0.0.1:port` answers the protocol header with
/// a method frame, i.e. it takes clients.
pub async fn speaks_amqp(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(AMQP_HEADER).await.ok()?;
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.ok()?;
        Some(first[0] == METHOD_FRAME)
    };
    // A server that accepted the socket but never answers is not up either.
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
