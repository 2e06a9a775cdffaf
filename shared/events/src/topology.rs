//! Who listens to what: every consumer group of the order flow and the topics it
//! receives, in one static table.
//!
//! A broker keeps a message only for the groups that exist when it is published: a
//! RabbitMQ exchange drops what no queue is bound for, a new Kafka group starts at the end
//! of the topic, the embedded broker has no group to put it in. So the order flow's
//! topology is declared *before* any traffic: every service declares every group of this
//! table when it starts (`orderflow_kit::service::Service::start`), before its outbox relay
//! publishes anything. An `order.placed` committed while the payment service has never run
//! waits in the payment group's queue instead of vanishing.
//!
//! ```text
//! group     receives
//! order     payment.succeeded, payment.failed
//! payment   order.placed
//! points    payment.succeeded
//! sms       payment.succeeded
//! logging   every topic
//! ```

use crate::topics;

/// One consumer group and the topics it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTopics {
    /// The group's name: the name of the service that consumes in it.
    pub group: &'static str,
    /// What it receives.
    pub topics: &'static [&'static str],
}

/// The order service: the payment outcomes move its orders on.
pub const ORDER: GroupTopics = GroupTopics {
    group: "order",
    topics: &[topics::PAYMENT_SUCCEEDED, topics::PAYMENT_FAILED],
};
/// The payment service: charges every placed order.
pub const PAYMENT: GroupTopics = GroupTopics {
    group: "payment",
    topics: &[topics::ORDER_PLACED],
};
/// The points service: awards points for every paid order.
pub const POINTS: GroupTopics = GroupTopics {
    group: "points",
    topics: &[topics::PAYMENT_SUCCEEDED],
};
/// The SMS service: texts the customer about every paid order.
pub const SMS: GroupTopics = GroupTopics {
    group: "sms",
    topics: &[topics::PAYMENT_SUCCEEDED],
};
/// The logging service: collects everything.
pub const LOGGING: GroupTopics = GroupTopics {
    group: "logging",
    topics: &topics::ALL,
};

/// Every group of the order flow.
pub const GROUPS: [GroupTopics; 5] = [ORDER, PAYMENT, POINTS, SMS, LOGGING];

/// Who publishes each topic: the service whose API (`order.placed`, through its outbox) or
/// whose handler produces it. The other half of the map: with [`GROUPS`] it says, for any
/// message of an order's journey, which group's work made it (`orderflow scenario journey`
/// names each hop by it).
pub const PUBLISHERS: [(&str, &str); 5] = [
    (topics::ORDER_PLACED, "order"),
    (topics::PAYMENT_SUCCEEDED, "payment"),
    (topics::PAYMENT_FAILED, "payment"),
    (topics::POINTS_AWARDED, "points"),
    (topics::SMS_SENT, "sms"),
];

/// The service that publishes `topic`, if it is one of the order flow's.
pub fn publisher_of(topic: &str) -> Option<&'static str> {
    PUBLISHERS
        .into_iter()
        .find(|(published, _)| *published == topic)
        .map(|(_, publisher)| publisher)
}

/// The group named `group`, if it is one of the order flow's (a test running a service
/// under a private group name gets `None`).
pub fn group(group: &str) -> Option<GroupTopics> {
    GROUPS.into_iter().find(|known| known.group == group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_a_listener_besides_logging() {
        for topic in topics::ALL {
            let listeners = GROUPS
                .iter()
                .filter(|group| group.group != "logging" && group.topics.contains(&topic))
                .count();
            // points.awarded and sms.sent are the end of the flow: only logging reads them.
            let end_of_flow = topic == topics::POINTS_AWARDED || topic == topics::SMS_SENT;
            assert_eq!(listeners == 0, end_of_flow, "{topic}");
        }
        assert_eq!(group("payment"), Some(PAYMENT));
        assert_eq!(group("payment-test-1234"), None);
    }

    #[test]
    fn every_topic_has_one_publisher_and_it_is_a_group_of_the_flow() {
        for topic in topics::ALL {
            let publishers = PUBLISHERS
                .iter()
                .filter(|(published, _)| *published == topic);
            assert_eq!(publishers.count(), 1, "{topic}");
            let publisher = publisher_of(topic).unwrap();
            assert!(group(publisher).is_some(), "{topic} by {publisher}");
        }
        assert_eq!(publisher_of("orders.shipped"), None);
    }
}
