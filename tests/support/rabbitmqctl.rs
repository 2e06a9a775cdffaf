//! `rabbitmqctl` for the tests that give themselves a RabbitMQ virtual host of their own
//! (so the services' group queues are nobody else's): one call, failing the test loudly.

/// Runs `rabbitmqctl ARGS` and returns what it printed; panics, with its stderr, when it
/// fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
