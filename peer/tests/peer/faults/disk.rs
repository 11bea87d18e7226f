//! Disk trouble under `anomos get`: an output path under a regular file, a
//! read-only file system, a disk too small to preallocate, and a disk that
//! fills up in the middle of the download (ext2 on a loop device: no
//! `fallocate`, so space runs out while pieces are written). Each ends with
//! a one-line error and a non-zero exit code, and once space is freed the
//! next run resumes from the pieces that were verified.
//!
//! Mounting needs root; without it only the first case runs and the others
//! say why they were skipped.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::download::{text, GET_LIMIT, MIB};
use crate::faults::number_after;
use crate::lab::{random_file, run, same_file, Lab};

/// A file system mounted for the test, unmounted (and its loop device
/// released) on drop.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    /// `mount ARGS… DIR`; `Err` with mount's complaint if it refused.
    fn new(dir: &Path, args: &[&str]) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let o = std::process::Command::new("mount")
            .args(args)
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-d")
            .arg(&self.dir)
            .status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Exit ≠ 0 without a panic, and the last line of stderr is the error,
/// mentioning `what`, said once.
fn fails_with(o: &Output, what: &str) -> String {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert_ne!(o.status.code(), Some(101), "panicked: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        last.starts_with("anomos: ") && last.contains(what),
        "last line {last:?} does not say {what:?}; stderr: {err}"
    );
    assert_eq!(err.matches(what).count(), 1, "said more than once: {err}");
    last.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_trouble_fails_with_one_line_and_resumes_later() {
    let lab = Lab::start(4).await;
    let size = 8 * MIB;
    let src = lab.dir.path().join("share/data.bin");
    random_file(&src, size, 51);
    let torrent = lab.make_torrent(&src, "data").await;
    let _seed = lab.seed(&torrent, &src, "seed").await;
    let get = |out: &Path, name: &str| lab.get(&torrent, out, name);

    // An output "directory" under a regular file: no root needed.
    let file = lab.dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = run(get(&file.join("sub"), "g1"), GET_LIMIT).await;
    eprintln!("under a file: {}", fails_with(&o, "is not a directory"));

    if !is_root() {
        eprintln!("SKIPPED read-only, full and filling disks: not root (mount needs it)");
        return;
    }
    // Read-only file system.
    let ro_dir = lab.dir.path().join("ro");
    match Mount::new(&ro_dir, &["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"]) {
        Ok(_ro) => {
            let o = run(get(&ro_dir, "g2"), GET_LIMIT).await;
            eprintln!("read-only: {}", fails_with(&o, "permission denied"));
        }
        Err(e) => eprintln!("SKIPPED read-only case: mount refused: {e}"),
    }
    // Too small to hold the file: refused before any download.
    let small = lab.dir.path().join("small");
    match Mount::new(&small, &["-t", "tmpfs", "-o", "size=2m", "tmpfs"]) {
        Ok(_small) => {
            let o = run(get(&small, "g3"), GET_LIMIT).await;
            eprintln!(
                "too small: {}",
                fails_with(&o, "disk full while preallocating")
            );
        }
        Err(e) => eprintln!("SKIPPED small-disk case: mount refused: {e}"),
    }
    let meta = anomos_peer::app::read_torrent(&torrent).unwrap();
    let piece = u64::from(meta.piece_length());
    filling_disk(&lab, &src, piece, &get).await;
}

/// ext2 has no `fallocate`: the file is sparse and the disk fills while
/// pieces are written.
async fn filling_disk(
    lab: &Lab,
    src: &Path,
    piece: u64,
    get: &dyn Fn(&Path, &str) -> tokio::process::Command,
) {
    let size = std::fs::metadata(src).unwrap().len();
    let image = lab.dir.path().join("ext2.img");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(16 * MIB as u64).unwrap();
    drop(f);
    let mkfs = std::process::Command::new("mkfs.ext2")
        .args(["-q", "-F", "-m", "0"])
        .arg(&image)
        .output();
    if !mkfs.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED filling-disk case: mkfs.ext2 unavailable ({mkfs:?})");
        return;
    }
    let dir = lab.dir.path().join("ext2");
    let image_arg = image.display().to_string();
    let _mount = match Mount::new(&dir, &["-o", "loop", &image_arg]) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED filling-disk case: loop mount refused: {e}");
            return;
        }
    };
    // Leave room for about half of the file.
    let free = |d: &Path| {
        let o = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(d)
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    let filler = dir.join("filler");
    let keep = size / 2;
    std::fs::write(&filler, vec![1u8; (free(&dir) - keep) as usize]).unwrap();
    let out = dir.join("out");
    let o = run(get(&out, "g4"), GET_LIMIT).await;
    eprintln!("filling up: {}", fails_with(&o, "disk full while writing"));

    // Space again: the next run keeps what was verified.
    std::fs::remove_file(&filler).unwrap();
    let o = run(get(&out, "g4"), GET_LIMIT).await;
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", text(&o.stderr));
    assert!(same_file(src, &out.join("data.bin")), "content differs");
    let resumed = number_after(&stdout, "resumed");
    let fetched = number_after(&stdout, "fetched");
    let pieces = size.div_ceil(piece);
    let missing = size.saturating_sub(resumed * piece);
    eprintln!("after freeing space: resumed {resumed} of {pieces} pieces, fetched {fetched} B for {missing} B missing");
    assert!(resumed > 0 && resumed < pieces, "resumed {resumed}");
    assert!(
        fetched as f64 <= missing as f64 * 1.1,
        "fetched {fetched} B for {missing} B missing"
    );
}
