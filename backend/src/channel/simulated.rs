//! The simulated WhatsApp channel: accepts every message at once and then reports `sent`,
//! `delivered` and `read` after the configured delays (`channel.timeline`, measured from the
//! send). Test numbers behave like Stripe's test cards (SPEC §7):
//!
//! | number | outcome |
//! |---|---|
//! | `+15550000001` | `failed`, `recipient_unreachable` |
//! | `+15550000002` | `sent`, `delivered`, never `read` |
//! | `+15550000003` | `failed`, `not_on_whatsapp` |
//! | any other | `sent`, `delivered`, `read` |
//!
//! The plan is a pure function of the number and the timeline, so after a restart the report
//! worker recomputes where each message is without any state of its own. Sending has no effect
//! outside the database, which makes a resend after an interrupted claim safe.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Channel, Outbound, Report, SendOutcome};
use crate::messages::{ErrorInfo, Status};

/// Stored on the messages this channel sends.
pub const NAME: &str = "whatsapp_simulated";

pub const UNREACHABLE: &str = "+15550000001";
pub const NEVER_READ: &str = "+15550000002";
pub const NOT_ON_WHATSAPP: &str = "+15550000003";

pub struct SimulatedWhatsApp {
    /// Delays of sent, delivered, read after the send; made non-decreasing so the reports stay
    /// in lifecycle order whatever the configuration says.
    sent: Duration,
    delivered: Duration,
    read: Duration,
}

impl SimulatedWhatsApp {
    pub fn new(timeline: Vec<Duration>) -> Self {
        let at = |i: usize| timeline.get(i).copied().unwrap_or_default();
        let sent = at(0);
        let delivered = at(1).max(sent);
        let read = at(2).max(delivered);
        Self {
            sent,
            delivered,
            read,
        }
    }
}

fn report(status: Status) -> Report {
    Report {
        status,
        error: None,
    }
}

fn failure(code: &str, message: &str) -> Report {
    Report {
        status: Status::Failed,
        error: Some(ErrorInfo {
            code: code.to_string(),
            message: message.to_string(),
        }),
    }
}

impl Channel for SimulatedWhatsApp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, message: Outbound<'a>) -> BoxFuture<'a, SendOutcome> {
        // Shaped like a Cloud API message id; derived from ours, so a resend would be the same.
        let provider_message_id = format!("wamid.sim.{}", message.message_id);
        Box::pin(async move {
            SendOutcome::Accepted {
                provider_message_id,
            }
        })
    }

    fn report_plan(&self, to: &str) -> Vec<(Duration, Report)> {
        match to {
            UNREACHABLE => vec![(
                self.sent,
                failure(
                    "recipient_unreachable",
                    "the recipient's phone could not be reached",
                ),
            )],
            NOT_ON_WHATSAPP => vec![(
                self.sent,
                failure(
                    "not_on_whatsapp",
                    "the recipient's number is not registered on WhatsApp",
                ),
            )],
            NEVER_READ => vec![
                (self.sent, report(Status::Sent)),
                (self.delivered, report(Status::Delivered)),
            ],
            _ => vec![
                (self.sent, report(Status::Sent)),
                (self.delivered, report(Status::Delivered)),
                (self.read, report(Status::Read)),
            ],
        }
    }

    fn resend_is_safe(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statuses(plan: &[(Duration, Report)]) -> Vec<Status> {
        plan.iter().map(|(_, r)| r.status).collect()
    }

    #[test]
    fn test_numbers_and_ordering() {
        let sim = SimulatedWhatsApp::new(vec![
            Duration::from_millis(100),
            Duration::from_millis(50), // out of order on purpose: clamped
            Duration::from_secs(1),
        ]);
        let plan = sim.report_plan("+14155550101");
        assert_eq!(
            statuses(&plan),
            [Status::Sent, Status::Delivered, Status::Read]
        );
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(
            statuses(&sim.report_plan(NEVER_READ)),
            [Status::Sent, Status::Delivered]
        );
        let failed = sim.report_plan(UNREACHABLE);
        assert_eq!(
            failed[0].1.error.as_ref().unwrap().code,
            "recipient_unreachable"
        );
        let failed = sim.report_plan(NOT_ON_WHATSAPP);
        assert_eq!(failed[0].1.error.as_ref().unwrap().code, "not_on_whatsapp");
    }
}
