//! The benchmark harness (`inlet-bench`) in a tiny configuration, so that it cannot rot.
//! The real figures come from `inlet-bench all` (BENCHMARKS.md), never from `cargo test`.

use crate::support::*;
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_inlet-bench");

fn bench(args: &[&str]) -> String {
    let out = Command::new(BENCH)
        .args(args)
        .output()
        .expect("run inlet-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "inlet-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn load_counts_acknowledged_events_and_they_are_all_stored() {
    let s = Inlet::start();
    let key = s.mint("default");
    let addr = s.addr.to_string();
    let data = s.data().to_str().unwrap().to_owned();
    let common = [
        "--addr", &addr, "--key", &key, "--data", &data, "--inlet", BIN,
    ];
    let mut args = vec!["load", "--bulk", "20", "--conns", "4", "--requests", "15"];
    args.extend(["--dup-share", "0.5"]);
    args.extend(common);
    let out = bench(&args);
    assert!(out.contains("15 requests, 300 events"), "{out}");
    assert!(out.contains("no non-2xx"), "{out}");
    assert!(out.contains("equal"), "{out}");
    // Half resubmitted: some were answered as duplicates, none stored twice.
    let stored = s.export().len();
    assert!(stored < 300 && stored > 0, "stored {stored}");
    let mut args = vec!["load", "--conns", "8", "--requests", "40", "--seed", "2"];
    args.extend(common);
    let out = bench(&args);
    assert!(out.contains("accepted 40, duplicate 0"), "{out}");
    assert_eq!(s.export().len(), stored + 40);
}

#[test]
fn the_whole_suite_runs_in_a_tiny_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&[
        "all",
        "--inlet",
        BIN,
        "--seconds",
        "0.3",
        "--prefill",
        "3000",
        "--storage-events",
        "2000",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        out.contains("| scenario | figure | ratio | target | met |"),
        "{out}"
    );
    assert!(out.contains("Stored = acknowledged"), "{out}");
    assert!(out.contains("| yes | yes |"), "{out}");
    // Both targets' CPU budgets, with where inlet's CPU went.
    assert!(
        out.contains("| CPU budget per request at the singles target (0.9 × floor"),
        "{out}"
    );
    assert!(out.contains("without the identity indexer"), "{out}");
    assert!(out.contains("did not rule out 0.0%"), "{out}");
    // The PostgreSQL peer: its rows and a "× Postgres" ratio when it can run here (its tools
    // installed; as root, a postgres user to run it as), a line saying it was skipped if not.
    let found = |t: &str| format!("{{ command -v {t} || ls /usr/lib/postgresql/*/bin/{t}; }}");
    let probe = format!(
        "{} && {} && {{ [ \"$(id -u)\" != 0 ] || id postgres; }}",
        found("initdb"),
        found("pgbench")
    );
    let pg = Command::new("sh")
        .args(["-c", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if pg {
        assert!(out.contains("× Postgres"), "{out}");
        assert!(
            out.contains("| PostgreSQL peer: 16 clients × 1000-row"),
            "{out}"
        );
    } else {
        assert!(out.contains("| PostgreSQL peer: skipped ("), "{out}");
    }
}

#[test]
fn the_cost_curve_runs_in_a_tiny_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&[
        "curve",
        "--inlet",
        BIN,
        "--points",
        "3000,1000",
        "--seconds",
        "0.3",
        "--storage-events",
        "2000",
        "--no-postgres",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    // Points run ascending; each stored count is at least its point.
    let stored: Vec<u64> = rows[1..]
        .iter()
        .map(|r| r[2..].split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(stored[0] >= 1000 && stored[1] >= 3000, "{out}");
    // The share of ids the dedupe filter did not rule out, read from inlet's /metrics.
    for r in &rows[1..] {
        let share = r.split(" | ").nth(6).unwrap();
        assert!(share.ends_with('%'), "{share} in {r}");
    }
    assert!(out.contains("PostgreSQL: skipped (--no-postgres)"), "{out}");
    assert!(out.contains("no non-2xx: yes."), "{out}");
}
