//! One text per order at the gateway itself, counted in the gateway's own books
//! (`sms_gateway_texts`, append-only, not unique per order) — not in `sms_messages`,
//! whose UNIQUE order id would hide a second text.

use std::{sync::Arc, time::Duration};

use orderflow_events::Event;
use orderflow_kit::{consumer::Outcome, db::Db, outbox::Relay, shutdown::CancellationToken};
use orderflow_sms::{
    gateway::{SmsGateway, SmsGatewaySettings},
    handlers::PaymentSucceededHandler,
    startup,
};

use crate::{
    helpers::{spawn_app, Store, PATIENCE},
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

/// Two copies of the SMS service (one group, one database) on a broker that duplicates
/// every message and hands the copies to both at once: the gateway's books still show one
/// text per order.
async fn two_consumers_given_every_message_twice_at_once_text_once(store: Store) {
    const ORDERS: usize = 10;
    let mut first_config = None;
    let app = spawn_app(store, |config| {
        config.instance = "sms-a".into();
        config.gateway.latency = Duration::from_millis(50);
        first_config = Some(config.clone());
    })
    .await;
    let mut second_config = first_config.expect("configured");
    second_config.instance = "sms-b".into();
    let broker_url = second_config.service.broker_url.clone();
    let second = startup::build(second_config)
        .await
        .expect("the second copy builds");
    let second_ready = format!("http://{}/readyz", second.address());
    let stop_second = CancellationToken::new();
    let second = tokio::spawn(second.run_until_stopped(stop_second.clone()));
    // Ready means subscribed: from now on the group has two consumers.
    orderflow_kit::wait::until(
        "the second copy to be ready",
        PATIENCE,
        Duration::from_millis(20),
        || {
            let request = app.client.get(&second_ready).send();
            async move { (request.await.ok()?.status() == 200).then_some(()) }
        },
    )
    .await
    .expect("the second copy is ready");

    // Published through a handle of the same broker that duplicates everything.
    let faulty = orderflow_broker::connect(&format!("{broker_url}?duplicate=1&seed=5"))
        .await
        .expect("a faulty handle");
    let payments: Vec<_> = (0..ORDERS).map(|_| payment(1_000)).collect();
    faulty
        .publish_all(
            payments
                .iter()
                .map(|paid| Event::PaymentSucceeded(paid.clone()).to_envelope())
                .collect(),
        )
        .await
        .expect("published");
    let stats = orderflow_broker::memory::fault_stats(&broker_url).expect("the broker exists");
    // Twice for every group bound to payment.succeeded (the service declared the flow's
    // topology): the SMS group's twins are the duplicates the wait below counts.
    assert!(
        stats.duplicated >= ORDERS as u64,
        "every message twice: {stats:?}"
    );

    let report = app
        .wait_for("every order texted, every twin ignored", |app| async move {
            let report = app.reconcile().await;
            let done = report["messages"].as_array().map(Vec::len) == Some(ORDERS)
                && report["common"]["duplicates_ignored"].as_i64() == Some(ORDERS as i64)
                && report["common"]["outbox_pending"] == 0;
            done.then_some(report)
        })
        .await;
    let texts = report["texts"].as_array().expect("the gateway's books");
    assert_eq!(texts.len(), ORDERS, "{report}");
    assert!(
        texts.iter().all(|row| row["texts"] == 1),
        "one text per order at the gateway: {report}"
    );
    faulty.close().await.expect("closed");
    stop_second.cancel();
    second
        .await
        .expect("no panic")
        .expect("the second copy stops cleanly");
    app.stop().await;
}

orderflow_kit::on_every_store!(
    two_copies_handled_at_once_text_once,
    two_consumers_given_every_message_twice_at_once_text_once,
);
