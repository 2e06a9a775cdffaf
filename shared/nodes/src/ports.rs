//! Loopback ports for a node, chosen so that they are still free when it restarts.
//!
//! A port the kernel hands out for `bind(0)` comes from the ephemeral range, which is also
//! where the source ports of outgoing connections come from: between a kill and a restart,
//! some client's connection could take it, and the node could not listen again. So ports
//! are drawn from below that range (Linux's default starts at 32768), and one process never
//! hands out the same port twice, so two nodes started at once cannot collide.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, TcpListener},
    sync::{Mutex, OnceLock},
};

use rand::Rng;

/// Where ports are drawn from: above the well-known and common service ports, below the
/// kernel's ephemeral range.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Ports this process has handed out already.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A loopback port that nothing listens on right now, outside the ephemeral range, and
/// not handed out before by this process.
pub fn free_port() -> anyhow::Result<u16> {
    let mut rng = rand::rng();
    for _ in 0..1_000 {
        let port = rng.random_range(RANGE);
        let mut taken = handed_out().lock().unwrap();
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("found no free loopback port in {RANGE:?} after 1000 tries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_hands_out_a_port_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        assert!(ports.iter().all(|port| RANGE.contains(port)), "{ports:?}");
    }
}
