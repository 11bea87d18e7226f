//! Network namespaces for a `netns` run: one per peer, plus a hub.
//!
//! Layout, all inside namespaces this run creates (the host's own
//! namespace gets no address, route or interface):
//!
//! ```text
//!   hub namespace:  bridge br0 = A.B.0.1/16 (the tracker listens here)
//!                     ├─ veth v0 ── eth0 in node namespace 0 = A.B.0.2/16
//!                     ├─ veth v1 ── eth0 in node namespace 1 = A.B.0.3/16
//!                     └─ …
//! ```
//!
//! Processes enter their namespace through `ip netns exec NAME …` (which
//! execs in place, so the pid the load tester holds is the program's);
//! the load tester's scraping thread enters the hub. Names carry the load
//! tester's pid (`anlt<pid>h`, `anlt<pid>n<k>`): a [`Netns`] deletes its
//! namespaces when dropped (the veths and the bridge go with them), and a
//! new run first deletes namespaces left by load testers that no longer
//! run (killed with SIGKILL, so no drop ran).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Prefix of every namespace name this tool creates.
const PREFIX: &str = "anlt";

/// The run cannot create namespaces here (not root, no `ip`, a container
/// without CAP_SYS_ADMIN): the mode is skipped, not failed.
#[derive(Debug, thiserror::Error)]
#[error("netns mode skipped: {0}")]
pub struct Skipped(pub String);

/// The namespaces of one run; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    hub: String,
    nodes: Vec<String>,
    /// The hub's (and the tracker's) address.
    pub hub_ip: Ipv4Addr,
    /// Each node's address, in node order.
    pub node_ips: Vec<Ipv4Addr>,
}

/// Run `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `A.B` → the two first octets.
pub fn parse_subnet(s: &str) -> anyhow::Result<[u8; 2]> {
    let mut it = s.split('.').map(|x| x.parse::<u8>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) => Ok([a, b]),
        _ => bail!("--netns-subnet must be two octets, like 10.213"),
    }
}

/// Address of host number `h` (≥ 1) in `A.B.0.0/16`.
fn host(subnet: [u8; 2], h: usize) -> anyhow::Result<Ipv4Addr> {
    if h == 0 || h >= 65535 {
        bail!("too many namespaces for one /16");
    }
    Ok(Ipv4Addr::new(subnet[0], subnet[1], (h >> 8) as u8, h as u8))
}

/// Delete namespaces of earlier runs whose load tester is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

impl Netns {
    /// Create the hub with its bridge and `nodes` node namespaces linked
    /// to it. Fails with [`Skipped`] when namespaces cannot be created.
    pub fn create(nodes: usize, subnet: [u8; 2]) -> anyhow::Result<Netns> {
        remove_stale();
        let me = std::process::id();
        let hub = format!("{PREFIX}{me}h");
        if let Err(e) = ip(&["netns", "add", &hub]) {
            return Err(Skipped(format!("`ip netns add` is not permitted here ({e:#})")).into());
        }
        let mut ns = Netns {
            hub,
            nodes: Vec::new(),
            hub_ip: host(subnet, 1)?,
            node_ips: Vec::new(),
        };
        let hub = ns.hub.clone();
        let cidr = |a: Ipv4Addr| format!("{a}/16");
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "addr", "add", &cidr(ns.hub_ip), "dev", "br0"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for k in 0..nodes {
            let name = format!("{PREFIX}{me}n{k}");
            ip(&["netns", "add", &name])?;
            ns.nodes.push(name.clone());
            let addr = host(subnet, k + 2)?;
            let veth = format!("v{k}");
            ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ])?;
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            ip(&["-n", &name, "addr", "add", &cidr(addr), "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
            ns.node_ips.push(addr);
        }
        Ok(ns)
    }

    /// Namespaces created (nodes and hub).
    pub fn count(&self) -> usize {
        self.nodes.len() + 1
    }

    /// The hub's namespace file, for the scraping thread.
    pub fn hub_file(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.hub)
    }

    /// The command prefix that runs a program in the hub.
    pub fn hub_prefix(&self) -> Vec<String> {
        exec_prefix(&self.hub)
    }

    /// The command prefix that runs a program in node `k`.
    pub fn node_prefix(&self, k: usize) -> Vec<String> {
        exec_prefix(&self.nodes[k])
    }
}

/// Move the calling thread into the network namespace at `path` (a file
/// under `/run/netns`). Sockets it creates afterwards live there.
pub fn enter(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::fd::AsFd as _;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    rustix::thread::move_into_link_name_space(
        f.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering the network namespace {}", path.display()))
}

fn exec_prefix(name: &str) -> Vec<String> {
    ["ip", "netns", "exec", name]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            if let Err(e) = ip(&["netns", "delete", n]) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_addresses() {
        assert_eq!(parse_subnet("10.213").unwrap(), [10, 213]);
        assert!(parse_subnet("10").is_err());
        assert!(parse_subnet("10.300").is_err());
        assert!(parse_subnet("10.1.2").is_err());
        let s = [10, 213];
        assert_eq!(host(s, 1).unwrap(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(host(s, 257).unwrap(), Ipv4Addr::new(10, 213, 1, 1));
        assert!(host(s, 0).is_err());
        assert!(host(s, 65535).is_err());
        assert_eq!(exec_prefix("x"), vec!["ip", "netns", "exec", "x"]);
    }

    /// Creates two namespaces, connects over TCP from one to the other
    /// through the bridge, and checks that dropping removes them; skipped
    /// where namespaces are not allowed.
    #[test]
    fn namespaces_link_up_and_go_away() {
        use std::io::{Read as _, Write as _};
        let ns = match Netns::create(2, [10, 214]) {
            Ok(ns) => ns,
            Err(e) if e.is::<Skipped>() => {
                eprintln!("{e}");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        assert_eq!(ns.count(), 3);
        assert!(ns.hub_file().exists());
        let files: Vec<PathBuf> = ns
            .nodes
            .iter()
            .map(|n| PathBuf::from("/run/netns").join(n))
            .collect();
        let (f0, f1, ip0) = (files[0].clone(), files[1].clone(), ns.node_ips[0]);
        let server = std::thread::spawn(move || {
            enter(&f0).unwrap();
            let l = std::net::TcpListener::bind((ip0, 0)).unwrap();
            let port = l.local_addr().unwrap().port();
            (port, l)
        });
        let (port, l) = server.join().unwrap();
        let client = std::thread::spawn(move || {
            enter(&f1).unwrap();
            let mut c = std::net::TcpStream::connect((ip0, port)).unwrap();
            c.write_all(b"hi").unwrap();
        });
        let (mut conn, from) = l.accept().unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).unwrap();
        client.join().unwrap();
        assert_eq!(&buf, b"hi");
        assert_eq!(from.ip(), std::net::IpAddr::V4(ns.node_ips[1]));
        let names = ns.nodes.clone();
        drop(ns);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(names.iter().all(|n| !list.contains(n.as_str())), "{list}");
        assert!(!files[0].exists());
    }
}
