//! Backups that happen by themselves: the `[backup]` schedule (verified, private, rotated),
//! the .deb's preinst that backs up before an upgrade (run directly, as where systemd is
//! absent, and by dpkg itself installing into a temp root).

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn scheduled_count(inlet: &Inlet) -> usize {
    inlet
        .log
        .lock()
        .unwrap()
        .matches("scheduled backup written and verified")
        .count()
}

/// The events a backup file holds (checked on a copy: verifying opens it for writing).
fn events_in(backup: &Path) -> u64 {
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("b.redb");
    std::fs::copy(backup, &file).unwrap();
    inlet::ops::backup::verify(&file).unwrap().events
}

#[test]
fn the_server_backs_up_on_its_schedule_verified_private_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    let config = dir.path().join("inlet.toml");
    std::fs::write(
        &config,
        format!(
            "[backup]\nevery = \"1s\"\nkeep = 2\ndir = \"{}\"\n",
            backups.display()
        ),
    )
    .unwrap();
    let inlet = Inlet::start_with(&["--config", config.to_str().unwrap()]);
    // The first is due at start (none is there yet).
    wait_for("the first scheduled backup", || {
        scheduled_count(&inlet) >= 1
    });
    let key = inlet.mint("default");
    let r = inlet.client().post_json("/s2s/event", &key, &event("e1"));
    assert_eq!(r.status, 200, "{}", r.text());
    let after_event = scheduled_count(&inlet);
    wait_for("two more scheduled backups", || {
        scheduled_count(&inlet) >= after_event + 2
    });
    let files: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut named: Vec<_> = files
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("inlet-") && n.ends_with(".redb")
        })
        .cloned()
        .collect();
    named.sort();
    assert_eq!(named.len(), 2, "keep = 2: {files:?}");
    assert_eq!(files.len(), 2, "no partial file left: {files:?}");
    for f in &named {
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f:?}");
    }
    assert_eq!(events_in(named.last().unwrap()), 1);
    let mode = std::fs::metadata(&backups).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // The effective config shows the schedule.
    let printed = String::from_utf8(
        Command::new(BIN)
            .args(["--config", config.to_str().unwrap(), "check-config"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        printed.contains("[backup]") && printed.contains("every = \"1s\""),
        "{printed}"
    );
}

/// A root for the packaged files: `usr/bin/inlet` (this build), the packaged config, and
/// `var/lib/inlet` (the config's data dir) pointing at `data`.
fn packaged_root(data: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink(BIN, r.join("usr/bin/inlet")).unwrap();
    std::fs::create_dir_all(r.join("etc/inlet")).unwrap();
    std::fs::copy(
        Path::new(REPO).join("packaging/inlet.toml"),
        r.join("etc/inlet/inlet.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("var/lib")).unwrap();
    std::os::unix::fs::symlink(data, r.join("var/lib/inlet")).unwrap();
    root
}

fn preinst(root: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new("sh")
        .arg(Path::new(REPO).join("packaging/preinst"))
        .args(args)
        .env("DPKG_ROOT", root)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The upgrade backup, run directly (systemd absent or not: the script does not use it),
/// while a server holds the database: through its control socket, said where, restorable.
#[test]
fn the_upgrade_backup_script_backs_up_a_running_server_and_says_where() {
    let inlet = Inlet::start();
    let key = inlet.mint("default");
    let r = inlet
        .client()
        .post_json("/s2s/event", &key, &event("before-upgrade"));
    assert_eq!(r.status, 200, "{}", r.text());
    let root = packaged_root(inlet.data());
    let r = root.path();

    // A first install has nothing to back up.
    let out = preinst(r, &["install"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(!r.join("var/backups/inlet").exists());

    let out = preinst(r, &["upgrade", "0.0.9"], &[]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let backups: Vec<_> = std::fs::read_dir(r.join("var/backups/inlet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let file = &backups[0];
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("pre-upgrade-from-0.0.9-"), "{name}");
    assert!(said.contains(file.to_str().unwrap()), "says where: {said}");
    assert!(said.contains("inlet restore"), "{said}");
    assert_eq!(events_in(file), 1);
    let mode = std::fs::metadata(file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(r.join("var/backups/inlet"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // A backup that cannot be written stops the upgrade, and says how to go on without.
    let inside = inlet.data().join("no");
    let out = preinst(
        r,
        &["upgrade", "0.0.9"],
        &[("INLET_UPGRADE_BACKUP_DIR", inside.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INLET_SKIP_UPGRADE_BACKUP=1"));
    let out = preinst(
        r,
        &["upgrade", "0.0.9"],
        &[
            ("INLET_UPGRADE_BACKUP_DIR", inside.to_str().unwrap()),
            ("INLET_SKIP_UPGRADE_BACKUP", "1"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `dpkg -i` of the built package, twice: install, then an upgrade whose preinst backs the
/// database up. Into a temp root (`dpkg --root`), never this machine's own /usr and /etc:
/// the scripts run chrootless with `getent`, `adduser` and `systemctl` stubbed, so nothing
/// of this host changes. Needs root (dpkg's database and file ownership).
#[test]
fn dpkg_installs_the_deb_and_its_upgrade_backs_up_first() {
    if !is_root() {
        eprintln!("not root: dpkg -i into a temp root needs root; skipped");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new(Path::new(REPO).join("packaging/build-deb.sh"))
        .args(["--binary", BIN, "--compress", "none", "--out"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_owned();

    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let stubs = tempfile::tempdir().unwrap();
    let calls = stubs.path().join("calls");
    for name in ["getent", "adduser", "systemctl"] {
        let p = stubs.path().join(name);
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho \"{name} $*\" >> {}\n", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        stubs.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dpkg_i = || {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", r.display()))
            .args(["--force-script-chrootless", "--force-depends", "-i", &deb])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    dpkg_i();
    let bin = r.join("usr/bin/inlet");
    assert!(bin.exists());
    let status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
    assert!(
        status.contains("Package: inlet\nStatus: install ok installed"),
        "{status}"
    );
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        !called.contains("adduser"),
        "the stub getent says the user exists: {called}"
    );

    // The service's database (at the packaged config's data_dir, under the root).
    let data = r.join("var/lib/inlet");
    cli_ok(&data, &["init"]);
    let said = dpkg_i();
    let backups: Vec<_> = std::fs::read_dir(r.join("var/backups/inlet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}\n{said}");
    assert!(said.contains(backups[0].to_str().unwrap()), "{said}");
    events_in(&backups[0]);
}
