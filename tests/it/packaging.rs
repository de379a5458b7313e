//! The packaging: the .deb installs the binary (stripped, its libraries declared), the unit,
//! the example config, copyright, changelog and the user setup; the unit verifies with
//! systemd-analyze; the install script stages the same files.

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

/// The names of an ELF64 little-endian file's sections, read from its section headers.
fn elf_sections(path: &Path) -> Vec<String> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..6],
        b"\x7fELF\x02\x01",
        "{path:?}: not ELF64 little-endian"
    );
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let start = names + u32_at(header(i));
            let len = b[start..].iter().position(|&c| c == 0).unwrap();
            String::from_utf8_lossy(&b[start..start + len]).into_owned()
        })
        .collect()
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
    // The shared libraries the binary links, from dpkg-shlibdeps.
    let depends = info
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in {info}"));
    assert!(depends.contains("adduser"), "{depends}");
    assert!(depends.contains("libc6 (>= 2."), "{depends}");

    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg").arg("-x").arg(deb).arg(root.path()));
    let r = root.path();
    let bin = r.join("usr/bin/inlet");
    let meta = std::fs::metadata(&bin).unwrap();
    assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0);
    // Stripped: no symbol table, no debug information (the built binary has a symbol table).
    let built = elf_sections(Path::new(BIN));
    assert!(built.iter().any(|s| s == ".symtab"), "{built:?}");
    let packaged = elf_sections(&bin);
    assert!(packaged.iter().any(|s| s == ".text"), "{packaged:?}");
    for gone in [".symtab", ".debug_info", ".debug_line", ".debug_str"] {
        assert!(
            !packaged.iter().any(|s| s == gone),
            "{gone} in {packaged:?}"
        );
    }
    assert!(meta.len() < std::fs::metadata(BIN).unwrap().len() / 2);
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
        "docs/install.md",
        "docs/design/dedupe.md",
    ] {
        assert!(r.join("usr/share/doc/inlet").join(doc).exists(), "{doc}");
    }
    let doc = r.join("usr/share/doc/inlet");
    let copyright = std::fs::read_to_string(doc.join("copyright")).unwrap();
    assert!(
        copyright.starts_with(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        )
    );
    assert!(copyright.contains("License: Apache-2.0"), "{copyright}");
    let changelog = run(Command::new("gzip")
        .arg("-dc")
        .arg(doc.join("changelog.gz")));
    assert!(
        changelog.starts_with(&format!("inlet ({}) ", env!("CARGO_PKG_VERSION"))),
        "{changelog}"
    );
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
    postinst_configures(&c.join("postinst"));
}

/// Runs `postinst configure` as on a first install, with the user already there and
/// `systemctl` recorded: under systemd it enables the service; without (this host may be
/// either), it prints the next steps instead.
fn postinst_configures(postinst: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let stubs = tempfile::tempdir().unwrap();
    let calls = stubs.path().join("calls");
    for (name, body) in [
        ("getent", "exit 0".to_owned()),
        ("adduser", "echo adduser >> CALLS; exit 1".to_owned()),
        ("systemctl", "echo \"systemctl $*\" >> CALLS".to_owned()),
    ] {
        let path = stubs.path().join(name);
        let body = body.replace("CALLS", calls.to_str().unwrap());
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("sh")
        .arg(postinst)
        .arg("configure")
        .env("PATH", format!("{}:/usr/bin:/bin", stubs.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    if Path::new("/run/systemd/system").is_dir() {
        assert!(
            called.contains("systemctl enable --now inlet.service"),
            "{called}"
        );
    } else {
        assert_eq!(called, "", "no systemctl, no adduser for an existing user");
        for step in [
            "systemd is not running here",
            "install -d -m 0700 -o inlet -g inlet /var/lib/inlet",
            "/usr/bin/inlet --config /etc/inlet/inlet.toml serve",
            "keys mint --app default",
        ] {
            assert!(said.contains(step), "{step:?} not in {said}");
        }
    }
}

#[test]
fn debug_symbols_go_to_a_file_of_their_own_that_the_binary_names() {
    let out = tempfile::tempdir().unwrap();
    let deb = run(Command::new(Path::new(REPO).join("packaging/build-deb.sh"))
        .args([
            "--binary",
            BIN,
            "--compress",
            "none",
            "--debug-symbols",
            "--out",
        ])
        .arg(out.path()));
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    let debug = out.path().join(format!(
        "inlet_{}_{}.debug",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ));
    let kept = elf_sections(&debug);
    assert!(kept.iter().any(|s| s == ".symtab"), "{kept:?}");
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg")
        .arg("-x")
        .arg(deb.trim())
        .arg(root.path()));
    let packaged = elf_sections(&root.path().join("usr/bin/inlet"));
    assert!(
        packaged.iter().any(|s| s == ".gnu_debuglink"),
        "{packaged:?}"
    );
    assert!(!packaged.iter().any(|s| s == ".symtab"), "{packaged:?}");
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
