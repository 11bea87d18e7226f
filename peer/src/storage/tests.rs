//! Storage end to end on real files: make a torrent, seed it, download it
//! piece by piece, resume, and fail in the ways users will meet.

use super::*;
use anomos_common::metainfo::PieceHasher;
use proptest::prelude::*;
use std::path::Path;

const ANNOUNCE: &str = "https://tracker.example";
const PL: u32 = 16384;

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub(super) fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Write `files` (relative path, content) below `root`.
fn write_tree(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }
}

/// A multi-file tree with an empty file and pieces straddling files.
pub(super) fn album() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("a.txt", bytes(70_000, 1)),
        ("empty", Vec::new()),
        ("sub/b.bin", bytes(2 * 16384 + 5, 2)),
        ("sub/c/d", bytes(1, 3)),
        ("z", bytes(40_000, 4)),
    ]
}

/// The torrent's byte stream, in its file order.
pub(super) fn stream(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by_key(|(p, _)| p.split('/').map(str::to_string).collect::<Vec<_>>());
    sorted.iter().flat_map(|(_, d)| d.iter().copied()).collect()
}

/// Make the album torrent; returns (seed dir holder, seed path, meta).
pub(super) fn make_album() -> (tempfile::TempDir, PathBuf, Metainfo) {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("album");
    write_tree(&root, &album());
    let meta = make_torrent(&root, ANNOUNCE, None, Some(PL), |_, _| {}).expect("make");
    (t, root, meta)
}

fn seed(meta: &Metainfo, data: &Path) -> Storage {
    let target = Target::Seed {
        data: data.to_path_buf(),
    };
    Storage::open(meta, target, StorageOptions::default()).expect("open seed")
}

fn download(meta: &Metainfo, out: &Path) -> Result<Storage, StorageError> {
    let target = Target::Download {
        out_dir: out.to_path_buf(),
    };
    Storage::open(meta, target, StorageOptions::default())
}

/// Piece `p` read from `from` block by block, as an uploader serves it.
async fn fetch(from: &Storage, p: u32) -> Vec<u8> {
    let l = from.layout().clone();
    let mut piece = Vec::new();
    for b in 0..l.block_count(p).expect("count") {
        let (off, len) = l.block(p, b).expect("block");
        piece.extend(from.read_block(p, off, len).await.expect("read"));
    }
    piece
}

/// Whether the current user bypasses permission checks (root).
fn can_write_in(dir: &Path) -> bool {
    let probe = dir.join(".probe");
    let ok = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[tokio::test]
async fn single_file_round_trip() {
    let t = tempfile::tempdir().expect("tempdir");
    let file = t.path().join("movie.bin");
    let data = bytes(100_000, 9);
    std::fs::write(&file, &data).expect("write");
    let mut calls = Vec::new();
    let meta =
        make_torrent(&file, ANNOUNCE, None, Some(PL), |d, n| calls.push((d, n))).expect("make");
    assert!(!meta.is_multi_file());
    assert_eq!(meta.name(), "movie.bin");
    assert_eq!(calls.last(), Some(&(100_000, 100_000)));
    let s = seed(&meta, &file);
    let have = s.verify(|_, _| {}).await.expect("verify");
    assert!(have.is_complete());

    let out = tempfile::tempdir().expect("tempdir");
    let d = download(&meta, out.path()).expect("open download");
    assert_eq!(d.paths(), [out.path().join("movie.bin")]);
    for p in 0..meta.layout().piece_count() {
        assert!(d.write_piece(p, fetch(&s, p).await).await.expect("write"));
    }
    d.sync().await.expect("sync");
    assert_eq!(
        std::fs::read(out.path().join("movie.bin")).expect("read"),
        data
    );
    assert!(d.verify(|_, _| {}).await.expect("verify").is_complete());
}

#[tokio::test]
async fn multi_file_round_trip() {
    let (_t, root, meta) = make_album();
    assert!(meta.is_multi_file());
    let names: Vec<_> = meta.files().iter().map(|f| f.path.join("/")).collect();
    assert_eq!(names, ["a.txt", "empty", "sub/b.bin", "sub/c/d", "z"]);
    let s = seed(&meta, &root);
    let mut seen = 0;
    let have = s
        .verify(|done, total| seen = seen.max(done).max(total))
        .await
        .expect("verify");
    assert!(have.is_complete());
    assert_eq!(seen, meta.layout().piece_count());

    let out = tempfile::tempdir().expect("tempdir");
    let d = download(&meta, out.path()).expect("open download");
    // Out of order, as a swarm delivers.
    for p in (0..meta.layout().piece_count()).rev() {
        assert!(d.write_piece(p, fetch(&s, p).await).await.expect("write"));
    }
    d.sync().await.expect("sync");
    for (rel, data) in album() {
        let got = std::fs::read(out.path().join("album").join(rel)).expect("read");
        assert_eq!(got, data, "{rel}");
    }
}

#[tokio::test]
async fn resume_finds_what_was_written() {
    let (_t, root, meta) = make_album();
    let s = seed(&meta, &root);
    let out = tempfile::tempdir().expect("tempdir");
    let count = meta.layout().piece_count();
    {
        let d = download(&meta, out.path()).expect("open");
        // A fresh download is known empty: nothing to hash.
        let mut calls = 0;
        assert_eq!(
            d.verify(|_, _| calls += 1).await.expect("verify").count(),
            0
        );
        assert_eq!(calls, count);
        for p in (0..count).filter(|p| p % 2 == 0) {
            assert!(d.write_piece(p, fetch(&s, p).await).await.expect("write"));
        }
        // Pieces written this session are found without reopening.
        assert_eq!(
            d.verify(|_, _| {}).await.expect("verify").count(),
            count.div_ceil(2)
        );
    }
    let d = download(&meta, out.path()).expect("reopen");
    let have = d.verify(|_, _| {}).await.expect("verify");
    let expected: Vec<u32> = (0..count).filter(|p| p % 2 == 0).collect();
    assert_eq!(have.iter_set().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn corrupt_piece_writes_nothing() {
    let (_t, root, meta) = make_album();
    let s = seed(&meta, &root);
    let out = tempfile::tempdir().expect("tempdir");
    let d = download(&meta, out.path()).expect("open");
    // Piece 4 straddles a.txt and sub/b.bin (the empty file sits between).
    let mut bad = fetch(&s, 4).await;
    bad[100] ^= 1;
    assert!(!d.write_piece(4, bad.clone()).await.expect("write"));
    bad.pop();
    assert!(!d.write_piece(4, bad).await.expect("write"));
    let e = d.write_piece(99, vec![0; 16]).await.expect_err("range");
    assert_eq!(e.kind(), "out_of_range");
    for p in d.paths() {
        let on_disk = std::fs::read(p).expect("read");
        assert!(on_disk.iter().all(|&b| b == 0), "{}", p.display());
    }
    assert_eq!(d.verify(|_, _| {}).await.expect("verify").count(), 0);
    let e = s
        .write_piece(0, fetch(&s, 0).await)
        .await
        .expect_err("seed");
    assert_eq!(e.kind(), "read_only");
}

#[tokio::test]
async fn modified_seed_misses_exactly_the_bad_pieces() {
    let (_t, root, meta) = make_album();
    // Stream offsets: a.txt 0..70000, sub/b.bin 70000..102773, z from 102774.
    let mut a = std::fs::read(root.join("a.txt")).expect("read");
    a[16384 + 3] ^= 0xff; // piece 1
    std::fs::write(root.join("a.txt"), &a).expect("write");
    let mut z = std::fs::read(root.join("z")).expect("read");
    z[0] ^= 0xff; // stream 102774: piece 6
    std::fs::write(root.join("z"), &z).expect("write");
    let have = seed(&meta, &root).verify(|_, _| {}).await.expect("verify");
    let missing: Vec<u32> = have.iter_missing().collect();
    assert_eq!(missing, [1, 6]);
    assert_eq!(stream(&album()).len() as u64, meta.total_length());
}

#[tokio::test]
async fn seed_files_must_match_the_torrent() {
    let (_t, root, meta) = make_album();
    let mut z = std::fs::read(root.join("z")).expect("read");
    z.push(0);
    std::fs::write(root.join("z"), &z).expect("write");
    let target = Target::Seed { data: root.clone() };
    let e = Storage::open(&meta, target.clone(), StorageOptions::default()).expect_err("long");
    assert_eq!(e.kind(), "wrong_length");
    assert!(e.to_string().contains("40001 bytes"), "{e}");
    std::fs::remove_file(root.join("z")).expect("rm");
    let e = Storage::open(&meta, target, StorageOptions::default()).expect_err("missing");
    assert_eq!(e.kind(), "missing");
    assert!(e.to_string().ends_with("/z does not exist"), "{e}");
    let target = Target::Seed {
        data: root.join("a.txt"),
    };
    let e = Storage::open(&meta, target, StorageOptions::default()).expect_err("file");
    assert_eq!(e.kind(), "not_a_directory");
}

#[tokio::test]
async fn unwritable_out_dir_is_permission_denied() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_t, _root, meta) = make_album();
    let out = tempfile::tempdir().expect("tempdir");
    let ro = out.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    if can_write_in(&ro) {
        println!("skipped: mode 0o500 is not enforced for this user (root)");
    } else {
        let e = download(&meta, &ro).expect_err("wrote");
        assert_eq!(e.kind(), "permission_denied");
        assert!(e.to_string().contains("ro/album"), "{e}");
    }
    // What root cannot write either: a read-only file system (EROFS).
    let Some(_mount) = mount_tmpfs(&ro, "ro,size=64k") else {
        return;
    };
    let e = download(&meta, &ro).expect_err("wrote");
    assert_eq!(e.kind(), "permission_denied", "{e}");
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Mount a tmpfs with `options` on `dir`, or say why not and return None.
fn mount_tmpfs(dir: &Path, options: &str) -> Option<Mount> {
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .output();
    match mounted {
        Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            println!("skipped: cannot mount a tmpfs here: {}", why.trim());
            None
        }
        Err(e) => {
            println!("skipped: cannot run mount: {e}");
            None
        }
    }
}

#[tokio::test]
async fn full_tmpfs_is_disk_full() {
    let (_t, _root, meta) = make_album();
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_mount) = mount_tmpfs(dir.path(), "size=64k") else {
        return;
    };
    // 150 KB of files on a 64 KiB file system: preallocation fails up front.
    let e = download(&meta, dir.path()).expect_err("fitted");
    assert_eq!(e.kind(), "disk_full", "{e}");
    assert!(
        e.to_string().starts_with("disk full while preallocating"),
        "{e}"
    );
}

#[tokio::test]
async fn symlink_in_target_is_refused() {
    let (_t, _root, meta) = make_album();
    let out = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(elsewhere.path(), out.path().join("album")).expect("symlink");
    let e = download(&meta, out.path()).expect_err("followed");
    assert_eq!(e.kind(), "unsafe_path");
    assert_eq!(std::fs::read_dir(elsewhere.path()).expect("ls").count(), 0);
}

#[test]
fn storage_and_its_futures_are_send() {
    fn send_sync<T: Send + Sync + 'static>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let (_t, root, meta) = make_album();
    let s = seed(&meta, &root);
    send_sync(&s);
    send(&s.read_block(0, 0, 1));
    send(&s.write_piece(0, Vec::new()));
    send(&s.verify(|_, _| {}));
    send(&s.sync());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any file lengths (empty files included) and piece length: writing
    /// every piece, then reading every block, gives back the bytes.
    #[test]
    fn every_block_reads_back(
        lengths in proptest::collection::vec(
            prop_oneof![Just(0usize), 1usize..3000, 1usize..70_000], 1..6),
        shift in 14u32..17,
        jobs in 1usize..4,
        cache_pieces in 0usize..3,
        seed in any::<u64>(),
    ) {
        prop_assume!(lengths.iter().sum::<usize>() > 0);
        let pl = 1u32 << shift;
        let datas: Vec<Vec<u8>> = lengths.iter().enumerate()
            .map(|(i, &n)| bytes(n, seed.wrapping_add(i as u64))).collect();
        let all: Vec<u8> = datas.concat();
        let mut hasher = PieceHasher::new(pl);
        hasher.update(&all);
        let files: Vec<(Vec<String>, u64)> = lengths.iter().enumerate()
            .map(|(i, &n)| (vec![format!("f{i}")], n as u64)).collect();
        let meta = Metainfo::create(&files, "t", pl, hasher.finish(), ANNOUNCE, None)
            .expect("create");
        let out = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let target = Target::Download { out_dir: out.path().to_path_buf() };
            let opts = StorageOptions { max_jobs: jobs, cache_pieces };
            let d = Storage::open(&meta, target, opts).expect("open");
            let l = meta.layout().clone();
            for p in 0..l.piece_count() {
                let start = l.piece_offset(p).expect("offset") as usize;
                let piece = all[start..start + l.piece_len(p).expect("len") as usize].to_vec();
                prop_assert!(d.write_piece(p, piece).await.expect("write"));
            }
            for p in 0..l.piece_count() {
                let start = l.piece_offset(p).expect("offset") as usize;
                for b in 0..l.block_count(p).expect("count") {
                    let (o, n) = l.block(p, b).expect("block");
                    let got = d.read_block(p, o, n).await.expect("read");
                    let at = start + o as usize;
                    prop_assert_eq!(&got[..], &all[at..at + n as usize]);
                }
            }
            let have = d.verify(|_, _| {}).await.expect("verify");
            prop_assert!(have.is_complete());
            Ok(())
        })?;
        for (i, data) in datas.iter().enumerate() {
            let got = std::fs::read(out.path().join("t").join(format!("f{i}"))).expect("read");
            prop_assert_eq!(&got, data);
        }
    }
}
