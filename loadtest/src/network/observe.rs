//! Watching a running network from outside, the same way in every mode:
//! waiting for the overlay, scraping the peers and the tracker, and
//! counting circuit-table entries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::prom::Scrape;
use super::scrape::{status_value, Get, Scraper};

/// Longest wait for the overlay to link up.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
/// The tracker's default lower bound of neighbours per peer.
const MIN_NEIGHBOURS: usize = 4;

/// The tracker's operator listener and its admin token.
#[derive(Debug, Clone)]
pub struct TrackerOps {
    /// `/metrics` and `/status` live here.
    pub operator: SocketAddr,
    /// Bearer token of `/status`.
    pub token: String,
}

impl TrackerOps {
    fn status(&self) -> Get {
        Get {
            addr: self.operator,
            path: "/status",
            token: Some(self.token.clone()),
        }
    }

    /// The tracker's metrics now.
    pub async fn scrape(&self, s: &Scraper) -> anyhow::Result<Scrape> {
        let body = s.get_each(vec![Get::metrics(self.operator)]).await?;
        Ok(Scrape::parse(&body.concat()))
    }
}

/// Wait until every peer in `peers` holds the links the tracker assigned:
/// the degrees the peers report add up to twice the tracker's edges, each
/// is at least the tracker's lower bound (or every other peer, in small
/// networks), and that holds for three readings in a row. Returns the
/// number of links (half the degree sum).
pub async fn converge(s: &Scraper, t: &TrackerOps, peers: &[SocketAddr]) -> anyhow::Result<u64> {
    let min = MIN_NEIGHBOURS.min(peers.len().saturating_sub(1)) as f64;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut stable = 0;
    loop {
        let mut gets: Vec<Get> = peers.iter().map(|m| Get::metrics(*m)).collect();
        gets.push(t.status());
        let bodies = s.get_each(gets).await?;
        let (status, metrics) = bodies.split_last().unwrap_or((&bodies[0], &[]));
        let degrees: Vec<f64> = metrics
            .iter()
            .map(|b| Scrape::parse(b).sum("anomos_neighbors_connected"))
            .collect();
        let edges = status_value(status, "graph_edges").unwrap_or(-1.0);
        let sum: f64 = degrees.iter().sum();
        let ok = degrees.iter().all(|d| *d >= min) && sum == 2.0 * edges;
        stable = if ok { stable + 1 } else { 0 };
        if stable >= 3 {
            return Ok((sum / 2.0) as u64);
        }
        if Instant::now() > deadline {
            bail!("overlay did not link up: degrees {degrees:?}, tracker edges {edges}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Scrape every address; a peer that does not answer gives `None`.
pub async fn scrape_all(s: &Scraper, peers: &[SocketAddr]) -> anyhow::Result<Vec<Option<Scrape>>> {
    let gets = peers.iter().map(|m| Get::metrics(*m)).collect();
    Ok(s.get_all(gets)
        .await?
        .into_iter()
        .map(|r| r.ok().map(|b| Scrape::parse(&b)))
        .collect())
}

/// `anomos_circuits_active` summed over the scrapes that answered.
pub fn table_entries(scrapes: &[Option<Scrape>]) -> u64 {
    scrapes
        .iter()
        .flatten()
        .map(|s| s.sum("anomos_circuits_active"))
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_skip_silent_peers() {
        let a = Scrape::parse("anomos_circuits_active 3\n");
        let b = Scrape::parse("anomos_circuits_active 4\nother 9\n");
        assert_eq!(table_entries(&[Some(a), None, Some(b)]), 7);
        assert_eq!(table_entries(&[]), 0);
    }
}
