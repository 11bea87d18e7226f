//! What every mode prepares the same way: the random files and their
//! torrents, the tracker's and the peers' settings, who seeds and fetches
//! what, and the byte-for-byte check of a download.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anomos_common::metainfo::Metainfo;
use anomos_common::Pin;
use anyhow::Context as _;
use rand::RngCore as _;

use super::NetworkArgs;

/// Peer settings for a lab: announce and re-dial quickly so the overlay
/// links up in seconds (the values `scripts/demo.sh` and the peer's own
/// loopback tests use).
pub const PEER_TOML: &str = "min_announce_gap_ms = 200\ndial_retry_ms = 100\n\
dial_retry_max_ms = 2000\ntracker_retry_ms = 200\ntracker_retry_max_ms = 2000\n";

/// The tracker's settings for a run (on top of listen / metrics / data dir).
///
/// Paths get the run's relay bounds; the announce interval is short so
/// downloads that want more circuits than one announce grants get them
/// soon. Rate limits are out of the way (in `inproc` and `procs` every
/// peer shares 127.0.0.1, and the run, not the limiter, is measured), the
/// per-announce circuit cap is the largest `--circuits` allows, and the
/// ratio policy never applies (no peer downloads 2^50 bytes). `same_ip`
/// is false in `netns`, where every peer has its own address.
pub fn tracker_toml(a: &NetworkArgs, admin_token: &str, same_ip: bool) -> String {
    format!(
        "allow_same_ip = {same_ip}\nadmin_token = \"{admin_token}\"\n\
         announce_interval_secs = {ai}\nsession_ttl_secs = {ttl}\n\
         min_relays = {min}\nmax_relays = {max}\nmax_circuits = 64\n\
         ratio_grace_bytes = {grace}\n\
         rate_per_ip = 1000000000.0\nburst_per_ip = 1000000000.0\n\
         rate_per_peer = 1000000.0\nburst_per_peer = 1000000.0\n",
        ai = a.announce_interval,
        ttl = (a.announce_interval * 3).max(120),
        min = a.min_relays,
        max = a.max_relays,
        grace = 1u64 << 50,
    )
}

/// The run's directory: removed at the end unless `--keep` (then its path
/// is printed, also when the run fails).
pub fn run_dir(a: &NetworkArgs) -> anyhow::Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix("anomos-network-")
        .tempdir()?;
    if a.keep {
        dir.disable_cleanup(true);
        eprintln!("run directory: {}", dir.path().display());
    }
    Ok(dir)
}

/// `RUST_LOG` for peer processes: `ANOMOS_PEER_LOG`, else `warn`.
pub fn peer_log_level() -> String {
    std::env::var("ANOMOS_PEER_LOG").unwrap_or_else(|_| "warn".into())
}

/// One torrent of the run.
#[derive(Debug, Clone)]
pub struct Torrent {
    /// The data file seeders serve.
    pub data: PathBuf,
    /// The `.atorrent`.
    pub file: PathBuf,
    /// Its metainfo.
    pub meta: Metainfo,
}

/// Write `n` files of `bytes` random bytes under `dir/share`.
pub fn make_data(dir: &Path, n: usize, bytes: u64) -> anyhow::Result<Vec<PathBuf>> {
    let share = dir.join("share");
    std::fs::create_dir_all(&share)?;
    let mut rng = rand::rng();
    let mut buf = vec![0u8; 1 << 20];
    (0..n)
        .map(|i| {
            let path = share.join(format!("t{i}.bin"));
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut left = bytes;
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                rng.fill_bytes(&mut buf[..k]);
                f.write_all(&buf[..k])?;
                left -= k as u64;
            }
            f.flush()?;
            Ok(path)
        })
        .collect()
}

/// Make a `.atorrent` for each file, pointing at the tracker.
pub fn make_torrents(
    files: &[PathBuf],
    url: &str,
    pin: Pin,
    piece_size: Option<u32>,
) -> anyhow::Result<Vec<Torrent>> {
    files
        .iter()
        .map(|data| {
            let meta =
                anomos_peer::storage::make_torrent(data, url, Some(pin), piece_size, |_, _| {})?;
            let file = data.with_extension("atorrent");
            std::fs::write(&file, meta.to_bytes())
                .with_context(|| format!("writing {}", file.display()))?;
            Ok(Torrent {
                data: data.clone(),
                file,
                meta,
            })
        })
        .collect()
}

/// Where downloader `k` writes, and the file it ends up with.
pub fn download_paths(dir: &Path, k: usize, t: &Torrent) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("got{k}"));
    let file = out.join(t.meta.name());
    (out, file)
}

/// Whether two files hold the same bytes (false if either is unreadable).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| std::fs::File::open(p).map(std::io::BufReader::new);
    let (Ok(mut x), Ok(mut y)) = (open(a), open(b)) else {
        return false;
    };
    let (mut bx, mut by) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = match read_full(&mut x, &mut bx) {
            Ok(n) => n,
            Err(_) => return false,
        };
        match read_full(&mut y, &mut by[..n.max(1)]) {
            Ok(m) if m == n && bx[..n] == by[..n] => {}
            _ => return false,
        }
        if n == 0 {
            // Both ended (y gave 0 of the 1 byte asked) at once.
            return true;
        }
    }
}

/// Read until `buf` is full or the input ends.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The last `max` bytes of a log file, for error messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let start = s.len().saturating_sub(max);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: super::super::NetworkArgs,
    }

    #[test]
    fn tracker_accepts_the_run_config() {
        let a = T::parse_from(["t", "--min-relays", "1", "--max-relays", "4"]).a;
        for same in [true, false] {
            let toml = format!(
                "listen = \"127.0.0.1:0\"\n{}",
                tracker_toml(&a, "ab12", same)
            );
            let cfg: tracker::config::Config = toml::from_str(&toml).unwrap();
            cfg.validate().unwrap();
            assert_eq!((cfg.min_relays, cfg.max_relays), (1, 4));
            assert_eq!(cfg.allow_same_ip, same);
            assert_eq!(cfg.max_circuits, 64);
        }
        let p: anomos_peer::config::PeerConfig =
            toml::from_str(&format!("tracker = \"https://127.0.0.1:1\"\n{PEER_TOML}")).unwrap();
        p.validate().unwrap();
        assert_eq!(p.min_announce_gap_ms, 200);
    }

    #[test]
    fn data_torrents_and_comparison() {
        let dir = tempfile::tempdir().unwrap();
        let files = make_data(dir.path(), 2, 300_000).unwrap();
        assert_eq!(std::fs::metadata(&files[1]).unwrap().len(), 300_000);
        assert!(same_bytes(&files[0], &files[0]));
        assert!(!same_bytes(&files[0], &files[1]), "random files differ");
        let pin = Pin([7; 32]);
        let t = make_torrents(&files, "https://127.0.0.1:1", pin, Some(1 << 16)).unwrap();
        assert_eq!(t[0].meta.total_length(), 300_000);
        assert_eq!(t[0].meta.pin(), Some(pin));
        assert!(t[1].file.exists());
        let (out, file) = download_paths(dir.path(), 3, &t[1]);
        assert_eq!(file, out.join("t1.bin"));
        // A copy with one byte changed, or cut short, is not the same.
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &bytes).unwrap();
        assert!(same_bytes(&files[0], &copy));
        bytes[299_999] ^= 1;
        std::fs::write(&copy, &bytes).unwrap();
        assert!(!same_bytes(&files[0], &copy));
        std::fs::write(&copy, &bytes[..1000]).unwrap();
        assert!(!same_bytes(&files[0], &copy));
        assert!(!same_bytes(&copy, &files[0]));
        assert!(!same_bytes(&copy, &dir.path().join("missing")));
        std::fs::write(&copy, "line one\nline two\n").unwrap();
        assert_eq!(log_tail(&copy, 9), "line two");
    }
}
