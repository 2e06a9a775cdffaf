//! `orderflow scenario`: each claim of the article about message queues staged on the
//! running order flow and measured, ending in a short table (or one JSON object).
//!
//! ```text
//! orderflow scenario --list
//! orderflow scenario <name> [--broker memory://|amqp://…|kafka://…] [--json]
//! ```
//!
//! Every scenario runs the five services in this process ([`crate::stack::InProcessStack`])
//! on the embedded broker unless `--broker` names a real one, and exits with status 1 when
//! what it measured does not bear its claim out.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | the registry ([`SCENARIOS`]: name, claim, run), the command line, the output |
//! | `flow.rs` | what the scenarios share: the stack up, one order placed, its logged journey read back |
//! | `table.rs` | the aligned columns every table is printed in |
//! | `fan_out.rs` | `fan-out`: one `payment.succeeded`, a copy for every group bound to it |
//! | `journey.rs` | `journey`: one order followed hop by hop through every service by its correlation id |

use anyhow::Context;
use futures::future::BoxFuture;
use serde::Serialize;

mod fan_out;
mod flow;
mod journey;
mod table;

/// One scenario: what it claims and how it is run.
pub struct Scenario {
    /// The name on the command line.
    pub name: &'static str,
    /// The claim it stages, in one line.
    pub claim: &'static str,
    /// Runs it on the broker at the URL given (a memory:// URL of the run's own, or a
    /// real broker's).
    pub run: fn(String) -> BoxFuture<'static, anyhow::Result<Outcome>>,
}

/// Every scenario, in the order the walkthrough takes them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fan-out",
        claim: "one publish of payment.succeeded, one copy for every group subscribed to it",
        run: |broker| Box::pin(fan_out::run(broker)),
    },
    Scenario {
        name: "journey",
        claim: "one order followed through every service by its correlation id, hop by hop",
        run: |broker| Box::pin(journey::run(broker)),
    },
];

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether the measurement bears the claim out (the exit status).
    pub holds: bool,
    /// The table for people.
    pub table: String,
    /// The same measurements for scripts and tests (`--json`).
    pub json: serde_json::Value,
}

/// Options of `orderflow scenario`.
#[derive(clap::Args)]
pub struct Args {
    /// The scenario to run (`--list` shows them).
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// Lists the scenarios and their claims.
    #[arg(long, conflicts_with = "name")]
    list: bool,
    /// Broker URL: memory:// (default), amqp://… or kafka://…
    #[arg(long, env = "ORDERFLOW_BROKER", default_value = "memory://")]
    broker: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The JSON every scenario prints: its own measurements under the common fields.
#[derive(Serialize)]
struct Printed<'a> {
    scenario: &'a str,
    claim: &'a str,
    broker: String,
    holds: bool,
    #[serde(flatten)]
    measured: &'a serde_json::Value,
}

/// The scenario called `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Scenario> {
    SCENARIOS
        .iter()
        .find(|scenario| scenario.name == name)
        .with_context(|| {
            let names: Vec<&str> = SCENARIOS.iter().map(|scenario| scenario.name).collect();
            format!("no scenario `{name}`: there are {}", names.join(", "))
        })
}

/// Runs the scenario `name` on `broker` (`memory://` gets an embedded broker of the run's
/// own). The JSON carries the common fields (`scenario`, `claim`, `broker`, `holds`).
pub async fn run(name: &str, broker: &str) -> anyhow::Result<Outcome> {
    let scenario = find(name)?;
    let url = if broker == "memory://" {
        // Nothing else in the process shares it, so two scenarios at once stay apart.
        format!("memory://scenario-{}", uuid::Uuid::now_v7().simple())
    } else {
        broker.to_owned()
    };
    let mut outcome = (scenario.run)(url.clone())
        .await
        .with_context(|| format!("scenario {name} on {}", redact(&url)))?;
    outcome.json = serde_json::to_value(Printed {
        scenario: scenario.name,
        claim: scenario.claim,
        broker: redact(&url),
        holds: outcome.holds,
        measured: &outcome.json,
    })?;
    Ok(outcome)
}

/// `orderflow scenario`: `Ok(false)` when the claim did not hold.
pub async fn run_cli(args: Args) -> anyhow::Result<bool> {
    if args.list {
        let mut rows = vec![vec!["scenario".to_owned(), "claim".to_owned()]];
        rows.extend(
            SCENARIOS
                .iter()
                .map(|scenario| vec![scenario.name.to_owned(), scenario.claim.to_owned()]),
        );
        print!("{}", table::render(&rows));
        return Ok(true);
    }
    let name = args
        .name
        .as_deref()
        .context("name a scenario (or --list)")?;
    let outcome = run(name, &args.broker).await?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome.json)?);
    } else {
        print!("{}", outcome.table);
        println!(
            "{}",
            if outcome.holds {
                "HOLDS: measured as claimed"
            } else {
                "DOES NOT HOLD: see the table above"
            }
        );
    }
    Ok(outcome.holds)
}

fn redact(url: &str) -> String {
    orderflow_kit::db::redact(url)
}
