//! The PostgreSQL peer: runs `bench/postgres.sh` (a throwaway cluster, the same bulk and
//! single workloads at the same number of stored events) and reads its `RESULT` lines.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the Postgres peer comes from (shared by `all` and `curve`).
#[derive(Debug, Clone, clap::Args)]
pub struct PgArgs {
    /// Leave the PostgreSQL rows out.
    #[arg(long)]
    pub no_postgres: bool,
    /// The script that runs the peer (default: bench/postgres.sh of the source tree).
    #[arg(long)]
    pub postgres_script: Option<PathBuf>,
}

/// One pgbench run.
#[derive(Debug, Clone, PartialEq)]
pub struct PgRun {
    pub workload: String,
    /// Rows in the table when the run started.
    pub stored: u64,
    pub events_per_sec: f64,
    pub latency_ms: f64,
    /// Every postgres process's CPU (user + system) per event.
    pub cpu_us: f64,
}

/// The peer's runs, or why there are none.
#[derive(Debug)]
pub enum Peer {
    Ran(Vec<PgRun>),
    Skipped(String),
}

impl Peer {
    /// The run of `workload` whose stored count is nearest `stored` (by ratio).
    pub fn at(&self, workload: &str, stored: u64) -> Option<&PgRun> {
        let Peer::Ran(runs) = self else { return None };
        let off = |r: &PgRun| (r.stored.max(1) as f64 / stored.max(1) as f64).ln().abs();
        runs.iter()
            .filter(|r| r.workload == workload)
            .min_by(|x, y| off(x).total_cmp(&off(y)))
    }
}

/// Runs the peer at each of `stored` (rows in the table) with `workloads` ("bulk single").
pub fn run(
    a: &PgArgs,
    stored: &[u64],
    seconds: f64,
    dir: &Path,
    workloads: &str,
) -> anyhow::Result<Peer> {
    if a.no_postgres {
        return Ok(Peer::Skipped("--no-postgres".into()));
    }
    let script = a
        .postgres_script
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/postgres.sh"));
    if !script.is_file() {
        return Ok(Peer::Skipped(format!("{} not found", script.display())));
    }
    let points = stored
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("bash")
        .arg(&script)
        .args(["-n", &points, "-w", workloads, "-d"])
        .arg(dir)
        .args(["-s", &(seconds.ceil().max(1.0) as u64).to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let text = String::from_utf8(out.stdout)?;
    if !out.status.success() {
        bail!("{} failed: {text}", script.display());
    }
    parse(&text)
}

fn parse(text: &str) -> anyhow::Result<Peer> {
    let mut runs = Vec::new();
    for line in text.lines() {
        if let Some(why) = line.strip_prefix("SKIP ") {
            return Ok(Peer::Skipped(why.to_owned()));
        }
        let Some(rest) = line.strip_prefix("RESULT ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let workload = words
            .next()
            .context("RESULT without a workload")?
            .to_owned();
        let field = |name: &str| -> anyhow::Result<f64> {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("RESULT without {name}: {line}"))?
                .parse()
                .with_context(|| format!("bad {name}: {line}"))
        };
        runs.push(PgRun {
            workload,
            stored: field("stored")? as u64,
            events_per_sec: field("eps")?,
            latency_ms: field("lat_ms")?,
            cpu_us: field("cpu_us")?,
        });
    }
    anyhow::ensure!(!runs.is_empty(), "no RESULT from the Postgres script");
    Ok(Peer::Ran(runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_results_and_picks_the_nearest_prefill() {
        let p = parse(
            "RESULT bulk stored=1000 eps=50000 tps=50.0 lat_ms=300.1 cpu_us=21.8\n\
             RESULT single stored=9000 eps=4000 tps=4000.0 lat_ms=12.5 cpu_us=261.3\n\
             RESULT bulk stored=10000 eps=40000 tps=40.0 lat_ms=310 cpu_us=25\n",
        )
        .unwrap();
        assert_eq!(p.at("bulk", 2000).unwrap().events_per_sec, 50000.0);
        assert_eq!(p.at("bulk", 20000).unwrap().stored, 10000);
        assert_eq!(p.at("single", 1).unwrap().cpu_us, 261.3);
        assert!(
            matches!(parse("SKIP not installed\n").unwrap(), Peer::Skipped(w) if w == "not installed")
        );
        assert!(parse("RESULT bulk stored=1 eps=x\n").is_err());
    }
}
