//! One text per order at the gateway itself, counted in the gateway's own books
//! (`sms_gateway_texts`, append-only, not unique per order) — not in `sms_messages`,
//! whose UNIQUE order id would hide a second text.

use std::{sync::Arc, time::Duration};

use orderflow_events::Event;
use orderflow_kit::{consumer::Outcome, db::Db, outbox::Relay};
use orderflow_sms::{
    gateway::{SmsGateway, SmsGatewaySettings},
    handlers::PaymentSucceededHandler,
};

use crate::{
    helpers::{spawn_app, Store},
    sms::payment,
};

/// Two copies of one `payment.succeeded` handled at the same moment — what two consumers
/// of the group do when a broker redelivers a message whose first delivery is still
/// running (a channel loss, a rebalance, a graceful stop handing work over). The gateway's
/// latency keeps both inside the window between "already texted?" and the commit.
async fn two_copies_handled_at_once_text_once(store: Store) {
    let mut database_url = String::new();
    let app = spawn_app(store, |config| {
        database_url = config.service.database_url.clone();
    })
    .await;
    let db = Db::connect(&database_url)
        .await
        .expect("the service's database");
    let gateway = Arc::new(SmsGateway::new(
        SmsGatewaySettings {
            latency: Duration::from_millis(200),
            rate_per_s: 100.0,
        },
        db.clone(),
    ));
    let relay = Relay::new(db.clone(), app.broker.clone());
    let handler = PaymentSucceededHandler::new(db.clone(), relay, gateway.clone(), "sms-x".into());
    let paid = payment(2_000);
    let envelope = Event::PaymentSucceeded(paid.clone()).to_envelope();

    let (first, second) = tokio::join!(
        handler.notify(&paid, &envelope),
        handler.notify(&paid, &envelope)
    );
    let mut outcomes = [
        first.expect("the first copy is handled"),
        second.expect("the second copy is handled"),
    ];
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));
    assert_eq!(outcomes, [Outcome::Done, Outcome::Duplicate]);
    assert_eq!(
        gateway.texts_about(paid.order_id).await.unwrap(),
        1,
        "the gateway dispatched one text for the order"
    );
    db.pool().close().await;
    app.stop().await;
}

orderflow_kit::on_every_store!(two_copies_handled_at_once_text_once);
