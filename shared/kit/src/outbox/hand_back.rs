//! Handing events back instead of publishing them: the outbox's side of the synchronous
//! wiring (`ORDERFLOW_WIRING=sync`, see [`crate::http::sync_handle`]).
//!
//! In the synchronous wiring a service's handler is called over HTTP, and the events it
//! would publish travel back to the caller in the HTTP answer. The handler is the very
//! same code the consumer loop runs — it still writes its event with
//! [`super::enqueue`] in its own transaction. What changes is only what that row means:
//! inside [`handing_back`], `enqueue` writes the row already marked sent (its `sent_at`
//! set in the same transaction, so no relay ever sees it unsent and the async flow does
//! not start behind the caller's back) and keeps a copy of the envelope for the caller.
//!
//! Why a task-local scope and not a parameter: the handlers' signatures (the kit's
//! [`crate::consumer::Handler`]) stay as they are, so there is no second code path through
//! the business logic to keep in step — the synchronous endpoint literally calls
//! `handler.handle(event, &envelope)`.

use std::{cell::RefCell, future::Future};

use orderflow_broker::Envelope;

tokio::task_local! {
    /// The envelopes enqueued by the code running inside [`handing_back`].
    static HANDED_BACK: RefCell<Vec<Envelope>>;
}

/// Runs `work`; every event it enqueues is handed back (returned) instead of published.
pub async fn handing_back<F: Future>(work: F) -> (F::Output, Vec<Envelope>) {
    HANDED_BACK
        .scope(RefCell::new(Vec::new()), async move {
            let output = work.await;
            let handed = HANDED_BACK.with(|handed| handed.take());
            (output, handed)
        })
        .await
}

/// Whether the running task hands its events back (it is inside [`handing_back`]).
pub(super) fn active() -> bool {
    HANDED_BACK.try_with(|_| ()).is_ok()
}

/// Keeps `envelope` for the caller of [`handing_back`]; a no-op outside it.
pub(super) fn keep(envelope: &Envelope) {
    let _ = HANDED_BACK.try_with(|handed| handed.borrow_mut().push(envelope.clone()));
}
