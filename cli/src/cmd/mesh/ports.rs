//! Listen ports for local nodes, chosen so that two meshes started side by side (parallel tests,
//! two terminals) never plan the same port.
//!
//! ```text
//! free_ports(n) ─► lock ports file (flock) ─► read the ports handed out in the last HELD_FOR
//!   ─► draw random ports below the ephemeral range, bindable now and not handed out
//!   ─► append them, drop the stale lines ─► unlock
//! ```
//! Between planning and a node binding its port, only another caller of this function could take
//! it; the file tells each caller what the others were given. Without the file (not writable), the
//! random draw alone keeps that unlikely.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a port handed out stays reserved: longer than a mesh takes to start its nodes.
const HELD_FOR: Duration = Duration::from_secs(120);
/// Most lines the file keeps (the newest): bounds it when many meshes start within HELD_FOR.
const MAX_LINES: usize = 8192;

/// Listen ports for `n` local nodes (TCP and UDP), each bound here and held until all are chosen.
///
/// They are drawn at random from *below* the kernel's ephemeral range: a port `bind(0)` hands out
/// comes from that range, and between now and the node binding it any outgoing connection or
/// port-0 listener on the machine (a parallel test's) could take it. Below the range only another
/// caller of this function could, and the ports file keeps it from drawing the same ones.
pub fn free_ports(n: usize) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    let mut file = Registry::open();
    let taken = file.as_mut().map(Registry::recent).unwrap_or_default();
    let (tcp, udp) = draw(n, &taken)?;
    if let Some(file) = file.as_mut() {
        file.add(tcp.iter().chain(&udp).copied());
    }
    Ok((tcp, udp))
}

fn draw(n: usize, taken: &BTreeSet<u16>) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (low, high) = (ephemeral_low / 2, ephemeral_low);
    let mut rng = rand::thread_rng();
    let attempts = 64 * n + 1024;
    let mut tcp = Vec::with_capacity(n);
    let mut udp = Vec::with_capacity(n);
    for _ in 0..attempts {
        if tcp.len() == n && udp.len() == n {
            break;
        }
        let port = rng.gen_range(low..high);
        if taken.contains(&port) {
            continue;
        }
        if tcp.len() < n {
            if let Ok(s) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                tcp.push(s);
            }
        } else if let Ok(s) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            udp.push(s);
        }
    }
    if tcp.len() < n || udp.len() < n {
        anyhow::bail!("found no {n} free ports between {low} and {high} on 127.0.0.1");
    }
    let tcp_ports = tcp
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let udp_ports = udp
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok((tcp_ports, udp_ports))
}

/// The ports file, locked for as long as this lives: lines of `PORT UNIX_MS`.
struct Registry {
    file: nix::fcntl::Flock<std::fs::File>,
    lines: Vec<(u16, u64)>,
}

impl Registry {
    /// This user's file in the temporary directory, or None where it cannot be opened or locked.
    fn open() -> Option<Registry> {
        let path: PathBuf =
            std::env::temp_dir().join(format!("otpmesh-ports-{}", nix::unistd::getuid().as_raw()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ok()?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()?;
        Some(Registry {
            file,
            lines: Vec::new(),
        })
    }

    /// The ports handed out within HELD_FOR (unreadable lines are dropped).
    fn recent(&mut self) -> BTreeSet<u16> {
        let mut text = String::new();
        let mut limited = (&*self.file).take(MAX_LINES as u64 * 32);
        if limited.read_to_string(&mut text).is_err() {
            text.clear();
        }
        let since = now_ms().saturating_sub(HELD_FOR.as_millis() as u64);
        self.lines = text
            .lines()
            .filter_map(|l| {
                let (port, at) = l.split_once(' ')?;
                Some((port.parse().ok()?, at.parse().ok()?))
            })
            .filter(|(_, at)| *at >= since)
            .collect();
        self.lines.iter().map(|(port, _)| *port).collect()
    }

    /// Rewrites the file: the recent lines and `ports`, the newest MAX_LINES of them.
    fn add(&mut self, ports: impl Iterator<Item = u16>) {
        let at = now_ms();
        self.lines.extend(ports.map(|p| (p, at)));
        let skip = self.lines.len().saturating_sub(MAX_LINES);
        let text: String = self.lines[skip..]
            .iter()
            .map(|(port, at)| format!("{port} {at}\n"))
            .collect();
        let mut file = &*self.file;
        // Best effort: a file that cannot be written only loses its reservations.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| file.write_all(text.as_bytes()));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_callers_in_a_row_are_never_handed_the_same_port() {
        let (tcp_a, udp_a) = super::free_ports(64).unwrap();
        let (tcp_b, udp_b) = super::free_ports(64).unwrap();
        let a: std::collections::BTreeSet<_> = tcp_a.iter().chain(&udp_a).collect();
        assert!(
            tcp_b.iter().chain(&udp_b).all(|p| !a.contains(p)),
            "{a:?} and {tcp_b:?} {udp_b:?}"
        );
    }
}
