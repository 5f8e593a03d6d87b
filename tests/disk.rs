//! Bad disks, with real processes: a full disk (a small tmpfs; skipped,
//! saying so, where this process cannot mount one) refuses writes with a
//! clear error while reads go on, and writes resume when space returns; a
//! damaged write-ahead log or manifest is found at start and the node
//! refuses to serve.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Starts the stopped server again and expects it to refuse, exiting 1
/// within 30 s; its log.
fn refused_at_start(s: &mut Server, damaged: &str) -> String {
    s.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = s.child.as_mut().expect("running");
    let mut code = None;
    while Instant::now() < deadline {
        if let Some(st) = c.try_wait().expect("wait") {
            s.child = None;
            code = st.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.log_text();
    assert_eq!(code, Some(1), "the node served a damaged {damaged}: {log}");
    log
}

/// Writes 40 batches of 50 keys (many WAL records), then kills the node.
fn fill_and_kill(s: &mut Server) {
    let ep = s.client_address.clone();
    put_when_ready(&ep, "/first", "1");
    for b in 0..40 {
        let mut args = vec!["batch".to_string(), "put".into()];
        for i in 0..50 {
            args.push(format!("/k/{b:03}/{i:03}"));
            args.push("v".repeat(100));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = cli(&ep, &args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    s.kill();
}

/// The largest file in `dir` whose name ends in `suffix` or starts with it.
fn largest(dir: &Path, pick: impl Fn(&str) -> bool) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| pick(&e.file_name().to_string_lossy()))
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .map(|e| e.path())
        .expect("file")
}

#[test]
fn a_damaged_write_ahead_log_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = single_node_with(tmp.path(), &data, &[]);
    fill_and_kill(&mut s);
    // Damage the middle of the log: acknowledged writes follow it.
    let wal = largest(&data, |n| n.ends_with(".log") && n != "LOG");
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(bytes.len() > 64 << 10, "a small log: {}", bytes.len());
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&wal, &bytes).unwrap();
    let log = refused_at_start(&mut s, "log");
    assert!(log.contains("is damaged"), "{log}");
}

#[test]
fn a_truncated_manifest_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = single_node_with(tmp.path(), &data, &[]);
    fill_and_kill(&mut s);
    let manifest = largest(&data, |n| n.starts_with("MANIFEST-"));
    let len = std::fs::metadata(&manifest).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&manifest)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let log = refused_at_start(&mut s, "manifest");
    assert!(
        log.contains("data directory") && log.contains("Error"),
        "{log}"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size_mib: u64) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?
            .status
            .success();
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    let s = rustix::fs::statvfs(p).unwrap();
    s.f_bavail * s.f_frsize
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mnt) = Mount::tmpfs(&tmp.path().join("mnt"), 256) else {
        eprintln!("disk test: SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = mnt.0.join("data");
    let mut s = single_node_with(tmp.path(), &data, &["--min-free-space-mb=32"]);
    let ep = s.client_address.clone();
    put_when_ready(&ep, "/kept", "1");
    // Fill the disk to 16 MiB free, under the 32 MiB reserve.
    let ballast = mnt.0.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while free_bytes(&mnt.0) > 16 << 20 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    // Within a second or two (free space is read once a second).
    wait_until(Duration::from_secs(10), "writes to be refused", || {
        let o = cli(&ep, &["put", "/probe", "x"]);
        !o.status.success() && stderr(&o).contains("disk full")
    });
    let o = cli(&ep, &["put", "/refused", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("MiB free") && e.contains("reads still work"),
        "{e}"
    );
    // Reads go on; nothing of the refused write is there.
    assert_eq!(stdout(&cli(&ep, &["get", "/kept"])).trim(), "1");
    assert_eq!(cli(&ep, &["get", "/refused"]).status.code(), Some(1));
    // Space returns: writes do too.
    std::fs::remove_file(&ballast).unwrap();
    wait_until(Duration::from_secs(10), "writes to resume", || {
        cli(&ep, &["put", "/after", "2"]).status.success()
    });
    assert_eq!(stdout(&cli(&ep, &["get", "/after"])).trim(), "2");
    assert!(
        s.log_text().contains("refusing client writes"),
        "{}",
        s.log_text()
    );
    s.kill();
    drop(mnt);
}
