//! The packaging: the .deb installs the binary, the unit, the example config and the user
//! setup; the unit verifies with systemd-analyze; the install script stages the same files.

use crate::support::*;
use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `systemd-analyze verify` on `unit` with its `/usr/bin/inlet` pointing at `binary` (verify
/// checks that the executable exists).
fn verify_unit(unit: &Path, binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    let copy = dir.path().join("inlet.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/inlet", binary.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_unit_verifies_and_is_hardened() {
    let unit = Path::new(REPO).join("packaging/inlet.service");
    verify_unit(&unit, Path::new(BIN));
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "StateDirectory=inlet",
        "ExecStartPre=/usr/bin/inlet check-config",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // The exposure score the README quotes.
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for inlet.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no score in {out}"));
    assert!(score <= 1.5, "exposure {score}");
}

#[test]
fn the_deb_installs_binary_unit_config_and_user_setup() {
    let out_dir = tempfile::tempdir().unwrap();
    let deb = run(Command::new(Path::new(REPO).join("packaging/build-deb.sh"))
        // A debug binary is ~100 MB: skip compressing it here.
        .args(["--binary", BIN, "--compress", "none", "--out"])
        .arg(out_dir.path()));
    let deb = Path::new(deb.trim());
    assert!(deb.exists(), "{deb:?}");

    let info = run(Command::new("dpkg-deb").args(["--field"]).arg(deb));
    assert!(info.contains("Package: inlet"), "{info}");
    assert!(info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))));

    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg").arg("-x").arg(deb).arg(root.path()));
    let r = root.path();
    let bin = r.join("usr/bin/inlet");
    let meta = std::fs::metadata(&bin).unwrap();
    assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0);
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(BIN).unwrap(),
        "the packaged binary"
    );
    let unit = r.join("usr/lib/systemd/system/inlet.service");
    assert_eq!(
        std::fs::read_to_string(&unit).unwrap(),
        std::fs::read_to_string(Path::new(REPO).join("packaging/inlet.service")).unwrap()
    );
    verify_unit(&unit, &bin);
    let config = r.join("etc/inlet/inlet.toml");
    assert!(config.exists());
    // The README and the docs it links to.
    for doc in [
        "README.md",
        "docs/api.md",
        "docs/migrating.md",
        "docs/design/dedupe.md",
    ] {
        assert!(r.join("usr/share/doc/inlet").join(doc).exists(), "{doc}");
    }
    assert!(
        std::fs::read_to_string(r.join("usr/lib/sysusers.d/inlet.conf"))
            .unwrap()
            .starts_with("u inlet ")
    );

    // The installed binary runs and accepts the installed config.
    let version = run(Command::new(&bin).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")));
    let printed = run(Command::new(&bin)
        .env_remove("INLET_DATA")
        .args(["--config"])
        .arg(&config)
        .arg("check-config"));
    assert!(
        printed.contains("data_dir = \"/var/lib/inlet\""),
        "{printed}"
    );

    // Maintainer scripts: the config is a conffile, postinst creates the user and enables
    // the service, and the scripts are valid sh.
    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(control.path()));
    let c = control.path();
    assert_eq!(
        std::fs::read_to_string(c.join("conffiles")).unwrap().trim(),
        "/etc/inlet/inlet.toml"
    );
    let postinst = std::fs::read_to_string(c.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"));
    assert!(postinst.contains("systemctl enable --now inlet.service"));
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(c.join(script)));
    }
}

#[test]
fn the_install_script_stages_the_same_files() {
    let dest = tempfile::tempdir().unwrap();
    run(Command::new(Path::new(REPO).join("packaging/install.sh"))
        .env("DESTDIR", dest.path())
        .args(["--binary", BIN]));
    let d = dest.path();
    let bin = d.join("usr/local/bin/inlet");
    assert!(bin.exists());
    let unit = d.join("etc/systemd/system/inlet.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/inlet serve"),
        "{text}"
    );
    assert!(!text.contains("/usr/bin/inlet"));
    let staged = tempfile::tempdir().unwrap();
    let copy = staged.path().join("inlet.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/inlet", bin.to_str().unwrap()),
    )
    .unwrap();
    run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    assert!(d.join("etc/inlet/inlet.toml").exists());

    // An existing config is kept.
    std::fs::write(d.join("etc/inlet/inlet.toml"), "listen = \"127.0.0.1:9\"\n").unwrap();
    run(Command::new(Path::new(REPO).join("packaging/install.sh"))
        .env("DESTDIR", d)
        .args(["--binary", BIN]));
    assert_eq!(
        std::fs::read_to_string(d.join("etc/inlet/inlet.toml")).unwrap(),
        "listen = \"127.0.0.1:9\"\n"
    );
}
