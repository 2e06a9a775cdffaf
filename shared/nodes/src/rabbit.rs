//! A RabbitMQ node of one's own: [`RabbitNode`].
//!
//! RabbitMQ runs several nodes on one host when each has its own node name, AMQP port,
//! distribution port and directories. This starts one through the installed scripts
//! (`rabbitmq-server`, `rabbitmqctl`) with all of them set by environment, and with its
//! own configuration file, so nothing of the shared node is used or touched:
//!
//! | what | set through | value |
//! | --- | --- | --- |
//! | node name | `RABBITMQ_NODENAME` | `orderflow-<uuid>@localhost` |
//! | AMQP port | `RABBITMQ_NODE_PORT` and `listeners.tcp.1` | a free loopback port |
//! | distribution port | `RABBITMQ_DIST_PORT` | another one, on loopback only |
//! | data, logs, pid file | `RABBITMQ_MNESIA_BASE`, `RABBITMQ_LOG_BASE`, `RABBITMQ_PID_FILE` | under the node's directory |
//! | plugins | `RABBITMQ_ENABLED_PLUGINS_FILE` | `[].`: none |
//! | config | `RABBITMQ_CONFIG_FILE`, `RABBITMQ_CONF_ENV_FILE`, `RABBITMQ_ADVANCED_CONFIG_FILE` | the node's own, so `/etc/rabbitmq` is not read |
//! | Erlang cookie | `HOME` (`$HOME/.erlang.cookie`) | a random one, for this node and its `rabbitmqctl` only |
//!
//! On Debian, `/usr/sbin/rabbitmq-server` is a wrapper that switches to the `rabbitmq`
//! user (and resets `HOME`); the real scripts are in `/usr/lib/rabbitmq/bin`, which is
//! used when it exists. `ORDERFLOW_RABBITMQ_SCRIPTS` names another directory.
//!
//! The script runs the Erlang VM as its child, so killing "the broker" means killing that
//! VM (`beam.smp`), whose OS pid RabbitMQ writes to the pid file.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use orderflow_kit::wait;
use tokio::process::{Child, Command};

use crate::{ports::free_port, probe, process};

/// How long a node may take to boot. Generous: on a loaded 2-core machine a cold boot
/// takes 10 s and recovery after a kill -9 can take longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a graceful `rabbitmqctl stop` or the script's exit after a kill may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The memory high watermark when no alarm is staged (RabbitMQ's default).
const NORMAL_WATERMARK: &str = "0.4";

/// A RabbitMQ node on its own ports with its own data, killed when dropped.
pub struct RabbitNode {
    /// The directory holding `rabbitmq-server` and `rabbitmqctl`.
    scripts: PathBuf,
    /// Everything the node writes: data, logs, pid file, config, cookie.
    dir: PathBuf,
    /// `orderflow-<uuid>@localhost`.
    name: String,
    amqp_port: u16,
    dist_port: u16,
    /// The `rabbitmq-server` script while the node runs; the VM is its child.
    server: Option<Child>,
    /// The VM's OS pid while the node runs.
    beam_pid: Option<u32>,
}

impl RabbitNode {
    /// The directory of the installed RabbitMQ scripts, or `None` when RabbitMQ is not
    /// installed (tests use this to skip, or to fail under CI).
    pub fn installed() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("ORDERFLOW_RABBITMQ_SCRIPTS") {
            return Some(PathBuf::from(dir));
        }
        let debian = Path::new("/usr/lib/rabbitmq/bin");
        if debian.join("rabbitmq-server").is_file() {
            return Some(debian.to_path_buf());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("rabbitmq-server"))
            .find(|script| script.is_file())
            // Homebrew and others link the script into PATH from its real directory,
            // where `rabbitmqctl` and `rabbitmq-env` sit beside it.
            .and_then(|script| std::fs::canonicalize(script).ok())
            .and_then(|script| script.parent().map(Path::to_path_buf))
    }

    /// Starts a new node with its files in a fresh directory under `dir`, and waits until
    /// it accepts AMQP clients (user `guest`, password `guest`, on loopback).
    pub async fn start(dir: &Path) -> anyhow::Result<RabbitNode> {
        let scripts = Self::installed().context(
            "RabbitMQ is not installed: no rabbitmq-server in /usr/lib/rabbitmq/bin or on PATH \
             (or set ORDERFLOW_RABBITMQ_SCRIPTS)",
        )?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let dir = dir.join(format!("rabbitmq-{id}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut node = RabbitNode {
            scripts,
            dir,
            name: format!("orderflow-{id}@localhost"),
            amqp_port: free_port()?,
            dist_port: free_port()?,
            server: None,
            beam_pid: None,
        };
        node.write_config()?;
        node.launch().await?;
        Ok(node)
    }

    /// The URL `orderflow_broker::connect` takes: `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The node name, for `rabbitmqctl -n`.
    pub fn node_name(&self) -> &str {
        &self.name
    }

    /// The AMQP port (the same across restarts).
    pub fn amqp_port(&self) -> u16 {
        self.amqp_port
    }

    /// The node's directory (data under `mnesia/`, logs under `log/`, the script's output
    /// in `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True while the node's VM runs.
    pub fn is_running(&self) -> bool {
        self.beam_pid
            .is_some_and(|pid| process::alive_with(pid, &self.vm_marker()))
    }

    /// Kills the node's Erlang VM with SIGKILL — no shutdown, nothing flushed — and waits
    /// until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let pid = self
            .beam_pid
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        process::sigkill(pid).with_context(|| format!("killing {} (pid {pid})", self.name))?;
        self.reap_script().await;
        wait::until(
            "the killed RabbitMQ VM to be gone",
            STOP_TIMEOUT,
            Duration::from_millis(20),
            || {
                let gone = !process::alive_with(pid, &self.vm_marker());
                async move { gone.then_some(()) }
            },
        )
        .await
    }

    /// Starts the node again on the same ports with the same data, and waits until it
    /// accepts clients. A node still running is stopped gracefully first.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            self.stop().await?;
        }
        self.launch().await
    }

    /// Raises (`true`) or clears (`false`) a memory alarm on this node, and waits until the
    /// node reports it so. While it is raised, RabbitMQ blocks every connection that
    /// publishes: the publish is neither routed nor confirmed.
    ///
    /// Raised by setting the memory high watermark to 0 (any memory use is above it),
    /// cleared by setting it back to RabbitMQ's default of 0.4.
    pub async fn set_memory_alarm(&self, on: bool) -> anyhow::Result<()> {
        let watermark = if on { "0" } else { NORMAL_WATERMARK };
        self.ctl(&["set_vm_memory_high_watermark", watermark])
            .await?;
        let state = if on { "raised" } else { "cleared" };
        wait::until(
            &format!("the memory alarm on {} to be {state}", self.name),
            STOP_TIMEOUT,
            Duration::from_millis(100),
            || async move {
                match self.memory_alarm_active().await {
                    Ok(active) => (active == on).then_some(()),
                    Err(_) => None,
                }
            },
        )
        .await
    }

    /// True when the node has a memory alarm raised right now.
    pub async fn memory_alarm_active(&self) -> anyhow::Result<bool> {
        let alarms = self.ctl(&["eval", "rabbit_alarm:get_alarms()."]).await?;
        // `[{{resource_limit,memory,'orderflow-…@localhost'},[]}]` while raised, `[]` not.
        Ok(alarms.contains("resource_limit,memory"))
    }

    /// Stops the node gracefully (`rabbitmqctl stop`) and waits until its VM is gone. It
    /// can be started again with [`RabbitNode::restart`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if !self.is_running() {
            self.beam_pid = None;
            self.reap_script().await;
            return Ok(());
        }
        if let Err(error) = self.ctl(&["stop"]).await {
            // A node that does not answer its CLI is still stopped: the hard way.
            process::warn(&format!(
                "{}: rabbitmqctl stop failed ({error:#}); killing it",
                self.name
            ));
            return self.kill9().await;
        }
        self.beam_pid = None;
        self.reap_script().await;
        Ok(())
    }

    /// Runs `rabbitmqctl -n <node> <args>` against this node with its cookie, and returns
    /// its standard output; a failure carries its standard error.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(self.scripts.join("rabbitmqctl"));
        command
            .args(["-n", &self.name, "-q"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        self.set_env(&mut command);
        let output = tokio::time::timeout(STOP_TIMEOUT, command.output())
            .await
            .with_context(|| format!("rabbitmqctl {args:?} on {} hung", self.name))?
            .with_context(|| {
                format!("cannot run {}", self.scripts.join("rabbitmqctl").display())
            })?;
        anyhow::ensure!(
            output.status.success(),
            "rabbitmqctl {args:?} on {} failed ({}): {}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Writes the node's config, environment file, plugin list and Erlang cookie.
    fn write_config(&self) -> anyhow::Result<()> {
        let write = |name: &str, text: &str| {
            let path = self.dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write(
            "rabbitmq.conf",
            &format!(
                "listeners.tcp.1 = 127.0.0.1:{port}\n\
                 vm_memory_high_watermark.relative = {NORMAL_WATERMARK}\n\
                 # A disk alarm would block publishing for a reason no test stages; the\n\
                 # machine's free disk is not what these nodes are about.\n\
                 disk_free_limit.absolute = 1MB\n",
                port = self.amqp_port
            ),
        )?;
        // Empty: without it the scripts read /etc/rabbitmq/rabbitmq-env.conf, which names
        // the shared node.
        write("rabbitmq-env.conf", "")?;
        write("enabled_plugins", "[].\n")?;
        let cookie = self.dir.join(".erlang.cookie");
        let secret: String = rand::Rng::sample_iter(rand::rng(), rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        write(".erlang.cookie", &secret)?;
        // Erlang refuses a cookie file that others can read.
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .with_context(|| format!("cannot chmod {}", cookie.display()))?;
        Ok(())
    }

    /// The environment that makes the scripts address this node and nothing else.
    fn set_env(&self, command: &mut Command) {
        let dir = &self.dir;
        command
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.amqp_port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            // Does not exist, on purpose: not /etc/rabbitmq/advanced.config.
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            // The distribution listener on loopback only, like the AMQP one.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    /// What the VM's command line contains and no other node's does: `-home <dir>`
    /// (the node name travels by environment, not on the command line).
    fn vm_marker(&self) -> String {
        format!("-home\0{}\0", self.dir.display())
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("beam.pid")
    }

    fn server_log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Runs `rabbitmq-server` and waits until the node answers AMQP, or fails at once
    /// with the end of its log when the script exits first.
    async fn launch(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.pid_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.server_log())
            .with_context(|| format!("cannot open {}", self.server_log().display()))?;
        let mut command = Command::new(self.scripts.join("rabbitmq-server"));
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        self.set_env(&mut command);
        let mut server = command.spawn().with_context(|| {
            format!(
                "cannot run {}",
                self.scripts.join("rabbitmq-server").display()
            )
        })?;
        let pid_file = self.pid_file();
        let port = self.amqp_port;
        let booted = wait::until(
            &format!("RabbitMQ node {} to accept AMQP on port {port}", self.name),
            BOOT_TIMEOUT,
            Duration::from_millis(100),
            || {
                let exited = server.try_wait().ok().flatten();
                let pid_file = pid_file.clone();
                async move {
                    if let Some(status) = exited {
                        return Some(Err(status));
                    }
                    let pid: u32 = std::fs::read_to_string(&pid_file)
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?;
                    probe::speaks_amqp(port).await.then_some(Ok(pid))
                }
            },
        )
        .await;
        match booted {
            Ok(Ok(pid)) => {
                self.beam_pid = Some(pid);
                self.server = Some(server);
                Ok(())
            }
            Ok(Err(status)) => anyhow::bail!(
                "rabbitmq-server for {} exited while starting ({status}); the end of {}:\n{}",
                self.name,
                self.server_log().display(),
                process::tail(&self.server_log(), 30)
            ),
            Err(timeout) => {
                // Do not leave a half-booted node behind.
                if let Ok(pid) = std::fs::read_to_string(&pid_file) {
                    if let Ok(pid) = pid.trim().parse() {
                        let _ = process::sigkill(pid);
                    }
                }
                let _ = server.kill().await;
                Err(timeout.context(format!(
                    "the end of {}:\n{}",
                    self.server_log().display(),
                    process::tail(&self.server_log(), 30)
                )))
            }
        }
    }

    /// Waits for the `rabbitmq-server` script to exit once its VM is gone (it waits on the
    /// VM), killing it if it does not.
    async fn reap_script(&mut self) {
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(STOP_TIMEOUT, server.wait())
                .await
                .is_err()
            {
                let _ = server.kill().await;
            }
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if let Some(pid) = self.beam_pid.take() {
            if process::alive_with(pid, &self.vm_marker()) {
                let _ = process::sigkill(pid);
            }
        }
        // The script itself is killed by `kill_on_drop`.
        process::remove_unless_kept(&self.dir);
    }
}
