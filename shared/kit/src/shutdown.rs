//! Graceful shutdown: Ctrl-C or SIGTERM cancels a token that every part of a service
//! watches. The HTTP server stops accepting, consumers stop taking deliveries and finish
//! (and ack) what they hold, the outbox relay publishes what is committed, then `main`
//! returns.

pub use tokio_util::sync::CancellationToken;

/// Resolves on Ctrl-C or SIGTERM (the signal `docker stop` and `kill` send).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing in-flight work");
}

/// A token cancelled when [`signal`] fires.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signal().await;
        cancel.cancel();
    });
    token
}
