//! A loopback TCP proxy the fault suite controls: services dial it instead of the broker,
//! and the suite cuts and restores the network between them.
//!
//! - [`Proxy::cut`] closes every live connection (both sides see the socket close, as
//!   after a broker-side reset) and turns new connections away: each one accepted while
//!   cut is closed at once, before a byte is forwarded, so a client's handshake fails.
//! - [`Proxy::restore`] forwards new connections again; the clients reconnect by
//!   themselves, which is what the scenario is there to show.
//!
//! Bytes are copied unchanged in both directions ([`tokio::io::copy_bidirectional`]); the
//! proxy knows nothing about AMQP or Kafka.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use orderflow_kit::shutdown::CancellationToken;
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
pub struct Proxy {
    address: SocketAddr,
    state: Arc<State>,
    /// Stops the accept loop (and with it every connection) when the proxy is dropped.
    stop: CancellationToken,
}

/// What the accept loop and the controller share.
struct State {
    /// `None` while cut. Otherwise the token every connection accepted since the last
    /// restore watches: cancelling it closes exactly those connections.
    live: Mutex<Option<CancellationToken>>,
    /// Connections turned away while cut (to show the cut really refused something).
    refused: AtomicU64,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let state = Arc::new(State {
            live: Mutex::new(Some(CancellationToken::new())),
            refused: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, upstream, state.clone(), stop.clone()));
        Ok(Proxy {
            address,
            state,
            stop,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Closes every live connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        if let Some(live) = self.state.live.lock().expect("never poisoned").take() {
            live.cancel();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        let mut live = self.state.live.lock().expect("never poisoned");
        if live.is_none() {
            *live = Some(CancellationToken::new());
        }
    }

    /// How many connections were turned away while cut.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        let live = state.live.lock().expect("never poisoned").clone();
        match live {
            // Dropping the socket closes it: the client's connect "succeeds" at the TCP
            // level and then reads end-of-stream, which every client treats as a failure.
            None => {
                state.refused.fetch_add(1, Ordering::Relaxed);
                drop(client);
            }
            Some(live) => {
                tokio::spawn(forward(client, upstream, live));
            }
        }
    }
}

/// Copies bytes both ways until either side closes or the connection's token is cancelled;
/// returning drops both sockets, which closes them.
async fn forward(mut client: TcpStream, upstream: SocketAddr, live: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        () = live.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream that echoes what it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 || socket.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut answer = vec![0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
            .await
            .map_err(|_| std::io::Error::other("no answer"))??;
        Ok(answer)
    }

    #[tokio::test]
    async fn cut_closes_live_connections_and_refuses_new_ones_until_restored() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut before = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut before).await.unwrap(), b"ping");

        proxy.cut();
        assert!(
            round_trip(&mut before).await.is_err(),
            "a connection that was live before the cut still forwards"
        );
        let mut during = TcpStream::connect(proxy.address()).await.unwrap();
        assert!(
            round_trip(&mut during).await.is_err(),
            "a connection made while cut was forwarded"
        );
        assert!(proxy.refused() >= 1);

        proxy.restore();
        let mut after = TcpStream::connect(proxy.address()).await.unwrap();
        assert_eq!(round_trip(&mut after).await.unwrap(), b"ping");
    }
}
