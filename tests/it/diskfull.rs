//! A real full disk: the data dir on a small tmpfs, filled up while the server takes load.
//! Commits that fail get 503 `storage_unavailable` (never a 2xx), the server stays up, the
//! writer reopens the database, and once space returns events are accepted again; nothing
//! acknowledged is lost. Needs root (to mount the tmpfs), as CI has.

use crate::support::*;
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn big_event(id: &str) -> serde_json::Value {
    let mut e = event(id);
    e["props"] = json!({ "pad": "p".repeat(2000) });
    e
}

#[test]
fn a_full_disk_gets_503_never_2xx_and_recovers_when_space_returns() {
    let base = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&base.path().join("mnt"), "24m");
    // Readiness also wants free disk space; on this tiny disk, ask for none.
    let mut inlet = Inlet::start_in(&fs.0, "info", &["--min-free-disk-mb", "0"]);
    let key = inlet.mint("default");
    let mut c = inlet.client();
    let mut acked = HashSet::new();
    let mut sent = 0;
    let auth = format!("Bearer {key}");
    let mut send = |c: &mut Client, n: usize, acked: &mut HashSet<String>| -> (u16, String) {
        let ids: Vec<String> = (0..n).map(|i| format!("e{}-{i}", sent + i)).collect();
        sent += n;
        let events: Vec<_> = ids.iter().map(|i| big_event(i)).collect();
        let body = json!({ "events": events }).to_string();
        // An early 503 (the key lookup failed while the database was being reopened) comes
        // before the body was read; the client may then see a reset instead: no answer.
        let Ok(r) = c.post(
            "/s2s/events/bulk",
            &[("Authorization", &auth)],
            body.as_bytes(),
        ) else {
            return (0, "no answer".to_owned());
        };
        match r.status {
            200 => acked.extend(ids),
            503 => {}
            s => panic!("unexpected {s}: {}", r.text()),
        }
        (
            r.status,
            r.json()["error"].as_str().unwrap_or("").to_owned(),
        )
    };
    for _ in 0..5 {
        assert_eq!(send(&mut c, 20, &mut acked).0, 200);
    }

    // Fill the disk.
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
    drop(f);

    // Load until a commit fails: every answer is 200 (really committed) or 503.
    let mut refused = 0;
    for _ in 0..2000 {
        let (status, reason) = send(&mut c, 50, &mut acked);
        if status == 0 {
            continue;
        }
        if status == 503 {
            assert!(
                ["storage_unavailable", "overloaded"].contains(&reason.as_str()),
                "{reason}"
            );
            refused += 1;
            if refused >= 5 {
                break;
            }
        }
    }
    assert!(refused >= 5, "a full disk must make commits fail");
    assert!(inlet.alive(), "the server stays up");
    inlet.wait_log("commit failed");

    // Space returns: the writer recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for("events accepted again", || {
        send(&mut c, 5, &mut acked).0 == 200
    });
    let r = c.get("/readyz").unwrap();
    assert_eq!(r.status, 200, "ready again");
    assert!(inlet.alive());

    // Everything acknowledged survives a SIGKILL, exactly once.
    inlet.kill();
    let store = inlet::store::Store::open(inlet.data()).unwrap();
    let identity = inlet::identity::Identity::open(&store);
    let report = inlet::ops::verify::with_graph(&identity).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let stored: HashSet<String> = report.events.iter().map(|e| e.2.clone()).collect();
    assert_eq!(stored.len(), report.events.len(), "stored once");
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} lost");
    }
    eprintln!(
        "disk full: {} acknowledged, {refused} commits refused with 503, recovered",
        acked.len()
    );
}
