//! `orderflow scenario fan-out`: publish/subscribe. The payment service publishes one
//! `payment.succeeded` per paid order, and the broker hands a copy to every consumer group
//! bound to that topic — order, points, SMS, logging — while the publisher knows none of
//! them.
//!
//! The groups expected to get a copy are read from the code's topology table
//! ([`orderflow_events::topology::GROUPS`]), not listed here. The copies are counted on
//! *taps*: for every group of the table, a consumer group of this run's own with the same
//! topics (`<group>.fan-out-<run>`), subscribed before the order is placed. A tap has to
//! be a group of its own because consumers inside one group compete: a counter joining
//! the points group would take `payment.succeeded`s away from the points service. To the
//! broker a tap is a group like any other, so what it receives is what the group it
//! mirrors receives. The groups that do not subscribe (payment) count as the control:
//! their taps must get nothing.
//!
//! The count stops once the log holds the order's whole journey and every subscribing tap
//! has its copy; a duplicate arriving later than that is not seen.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use orderflow_broker::{Deliveries, Subscription};
use orderflow_events::{
    topics,
    topology::{GroupTopics, GROUPS},
    EventKind,
};
use orderflow_kit::shutdown::CancellationToken;
use serde::Serialize;
use uuid::Uuid;

use super::{flow, table, Outcome};

/// The topic fanned out.
const TOPIC: &str = topics::PAYMENT_SUCCEEDED;

/// How long the taps may lag behind the log before the count is taken anyway (and a tap
/// without its copy shows 0).
const TAP_DEADLINE: Duration = Duration::from_secs(20);

/// One message a tap received.
#[derive(Debug, Clone)]
struct Received {
    message_id: Uuid,
    topic: String,
    key: String,
}

/// A consumer group of the run's own with the topics of one group of the table.
struct Tap {
    /// The group it mirrors.
    group: GroupTopics,
    subscription: Subscription,
    /// Everything it was handed, in order.
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    /// How many copies of `message_id` it was handed.
    fn copies_of(&self, message_id: Uuid) -> usize {
        self.received
            .lock()
            .expect("tap lock")
            .iter()
            .filter(|copy| copy.message_id == message_id)
            .count()
    }
}

/// One group's line of the result.
#[derive(Debug, Clone, Serialize)]
struct GroupCopies {
    /// The order flow's group (the tap's name is in `tap`).
    group: &'static str,
    /// The topics the table gives it.
    topics: &'static [&'static str],
    /// Whether the table binds it to `payment.succeeded`.
    subscribed: bool,
    /// Copies of the one `payment.succeeded` its tap received.
    copies: usize,
    /// The tap's group name.
    tap: String,
}

/// What `fan-out --json` prints beside the common fields.
#[derive(Debug, Serialize)]
struct FanOut {
    topic: &'static str,
    order_id: Uuid,
    /// The `payment.succeeded` the payment service published for the order.
    message_id: Uuid,
    /// How many distinct `payment.succeeded` messages were published for the order.
    publishes: usize,
    /// The groups the topology table subscribes to the topic.
    expected_groups: Vec<&'static str>,
    groups: Vec<GroupCopies>,
    /// Copies delivered over all groups.
    copies_total: usize,
}

/// Runs the scenario on `broker_url`.
pub async fn run(broker_url: String) -> anyhow::Result<Outcome> {
    let broker = orderflow_broker::connect(&broker_url).await?;
    let run = Uuid::now_v7().simple().to_string();
    let stop = CancellationToken::new();
    let mut taps = Vec::new();
    // Before any traffic: a broker keeps a message only for the groups that exist when it
    // is published.
    for group in GROUPS {
        let subscription = Subscription::new(
            format!("{}.fan-out-{}", group.group, &run[run.len() - 12..]),
            group.topics.iter().copied(),
        );
        let deliveries = broker.subscribe(subscription.clone()).await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(tap(deliveries, received.clone(), stop.clone()));
        taps.push(Tap {
            group,
            subscription,
            received,
            task,
        });
    }

    let measured = measure(&broker_url, &taps).await;
    stop.cancel();
    for tap in taps.iter_mut() {
        let _ = (&mut tap.task).await;
    }
    let _ = broker.close().await;
    for tap in &taps {
        crate::load::cleanup::remove_group(&broker_url, &tap.subscription.group).await?;
    }
    let (order_id, message_id) = measured?;

    let groups: Vec<GroupCopies> = taps
        .iter()
        .map(|tap| GroupCopies {
            group: tap.group.group,
            topics: tap.group.topics,
            subscribed: tap.group.topics.contains(&TOPIC),
            copies: tap.copies_of(message_id),
            tap: tap.subscription.group.clone(),
        })
        .collect();
    let mut published: Vec<Uuid> = taps
        .iter()
        .flat_map(|tap| tap.received.lock().expect("tap lock").clone())
        .filter(|copy| copy.topic == TOPIC && copy.key == order_id.to_string())
        .map(|copy| copy.message_id)
        .collect();
    published.sort_unstable();
    published.dedup();
    let report = FanOut {
        topic: TOPIC,
        order_id,
        message_id,
        publishes: published.len(),
        expected_groups: subscribers().map(|group| group.group).collect(),
        copies_total: groups.iter().map(|group| group.copies).sum(),
        groups,
    };
    let holds = report.publishes == 1
        && report
            .groups
            .iter()
            .all(|group| group.copies == usize::from(group.subscribed));
    Ok(Outcome {
        holds,
        table: render(&report),
        json: serde_json::to_value(&report)?,
    })
}

/// The groups the table binds to the topic.
fn subscribers() -> impl Iterator<Item = GroupTopics> {
    GROUPS
        .into_iter()
        .filter(|group| group.topics.contains(&TOPIC))
}

/// The stack up, one order placed and its journey logged, then every subscribing tap given
/// the time to have its copy. The order id and the `payment.succeeded`'s message id.
async fn measure(broker_url: &str, taps: &[Tap]) -> anyhow::Result<(Uuid, Uuid)> {
    let stack = flow::start_stack(broker_url).await?;
    let endpoints = stack.endpoints();
    let journey = async {
        let placed = flow::place_one(&endpoints.order).await?;
        let journey =
            flow::logged_journey(&endpoints.logging, placed.order_id, &flow::paid_journey())
                .await?;
        anyhow::Ok((placed, journey))
    }
    .await;
    stack.stop().await?;
    let (placed, journey) = journey?;
    let message_id = journey
        .iter()
        .find(|event| event.event_type == EventKind::PaymentSucceeded.name())
        .map(|event| event.message_id)
        .ok_or_else(|| anyhow::anyhow!("no payment.succeeded logged"))?;
    let subscribed: Vec<&Tap> = taps
        .iter()
        .filter(|tap| tap.group.topics.contains(&TOPIC))
        .collect();
    // A tap that never gets its copy is the claim failing, not the run: the count shows 0.
    let _ = orderflow_kit::wait::until(
        "every subscribing tap to receive its copy",
        TAP_DEADLINE,
        Duration::from_millis(20),
        || {
            let all = subscribed.iter().all(|tap| tap.copies_of(message_id) > 0);
            async move { all.then_some(()) }
        },
    )
    .await;
    Ok((placed.order_id, message_id))
}

/// Notes every message a tap is handed and acks it, until `stop`.
async fn tap(
    mut deliveries: Deliveries,
    received: Arc<Mutex<Vec<Received>>>,
    stop: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            delivery = deliveries.next() => delivery,
            () = stop.cancelled() => None,
        };
        let Some(delivery) = delivery else { return };
        let envelope = delivery.envelope();
        received.lock().expect("tap lock").push(Received {
            message_id: envelope.id,
            topic: envelope.topic.clone(),
            key: envelope.key.clone(),
        });
        let _ = delivery.ack().await;
    }
}

fn render(report: &FanOut) -> String {
    let mut rows = vec![vec![
        "group".to_owned(),
        "subscribes to it".to_owned(),
        "copies received".to_owned(),
    ]];
    rows.extend(report.groups.iter().map(|group| {
        vec![
            group.group.to_owned(),
            if group.subscribed { "yes" } else { "no" }.to_owned(),
            group.copies.to_string(),
        ]
    }));
    format!(
        "fan-out: order {} paid; the payment service published {} {} ({})\n\
         copies counted per group by a tap of this run with the group's topics\n{}  \
         {} publish, {} copies, {} groups subscribed in the topology table\n",
        report.order_id,
        report.publishes,
        report.topic,
        report.message_id,
        table::render(&rows),
        report.publishes,
        report.copies_total,
        report.expected_groups.len(),
    )
}
