//! CPU time over one timed run: the server's (user + system, whole process and per thread
//! role) and this load generator's, per event. The cores are shared by both, so these are
//! the figures that say where a target's budget goes.

use std::collections::HashMap;
use std::time::Duration;

/// What each thread name does, in the order a split is printed: inlet's, and the durable
/// floor's one committing thread (`ceiling::durable_server`).
const ROLES: [(&str, &str); 5] = [
    ("tokio-rt-worker", "request threads"),
    ("inlet-writer", "writer"),
    ("group-commit", "committer"),
    ("inlet-indexer", "identity indexer"),
    ("dedupe-freeze", "dedupe sort"),
];

/// CPU time (user + system) a process used so far, all its threads, live or exited.
pub fn process(pid: u32) -> Duration {
    ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// User + system clock ticks (10 ms) of a `/proc/.../stat` line, as a duration.
fn ticks(stat: &str) -> Duration {
    // Fields after the command name (which may hold spaces): utime and stime are 12th/13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let sum: u64 = (after.split_whitespace().skip(11).take(2))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Duration::from_millis(sum * 10)
}

/// (thread name, CPU time) of each live thread of `pid`, by thread id.
fn threads(pid: u32) -> HashMap<u32, (String, Duration)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in dir.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (name) state ...": the name may hold parentheses itself.
        let name = match (stat.find('('), stat.rfind(')')) {
            (Some(a), Some(b)) if a < b => stat[a + 1..b].to_owned(),
            _ => String::new(),
        };
        out.insert(tid, (name, ticks(&stat)));
    }
    out
}

/// Started before a run, read after it.
pub struct Meter {
    pid: u32,
    server: Duration,
    generator: Duration,
    threads: HashMap<u32, (String, Duration)>,
}

/// Microseconds of CPU per event over one run.
#[derive(Debug, Clone, Default)]
pub struct Used {
    /// The whole server process.
    pub server: f64,
    /// This process: the load generator (and the harness, which is idle meanwhile).
    pub generator: f64,
    /// The server's, per thread role ([`ROLES`], then "other": threads of any other name
    /// and those that exited during the run).
    pub roles: Vec<(&'static str, f64)>,
}

impl Meter {
    pub fn start(pid: u32) -> Meter {
        Meter {
            pid,
            server: process(pid),
            generator: process(std::process::id()),
            threads: threads(pid),
        }
    }

    /// The CPU used since [`Meter::start`], per event of the `events` the run sent.
    pub fn stop(&self, events: u64) -> Used {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / events.max(1) as f64;
        let server = process(self.pid).saturating_sub(self.server);
        let generator = process(std::process::id()).saturating_sub(self.generator);
        let mut by_name: HashMap<String, Duration> = HashMap::new();
        for (tid, (name, now)) in threads(self.pid) {
            let before = self.threads.get(&tid).map_or(Duration::ZERO, |t| t.1);
            *by_name.entry(name).or_default() += now.saturating_sub(before);
        }
        let mut named = Duration::ZERO;
        let mut roles = Vec::new();
        for (thread, role) in ROLES {
            let d = by_name.get(thread).copied().unwrap_or_default();
            named += d;
            roles.push((role, per(d)));
        }
        roles.push(("other", per(server.saturating_sub(named))));
        Used {
            server: per(server),
            generator: per(generator),
            roles,
        }
    }
}

impl Used {
    /// "request threads 2.3, writer 2.9, …" (µs per event, one decimal).
    pub fn split(&self) -> String {
        (self.roles.iter())
            .filter(|(_, us)| *us >= 0.05)
            .map(|(role, us)| format!("{role} {us:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The server's CPU of one role, µs per event.
    pub fn role(&self, role: &str) -> f64 {
        (self.roles.iter())
            .find(|(r, _)| *r == role)
            .map_or(0.0, |(_, us)| *us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_user_plus_system_time() {
        // pid (comm with ") (" inside) state ppid ... utime=7 stime=5 ...
        let stat = "42 (a) (b) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(ticks(stat), Duration::from_millis(120));
        assert_eq!(ticks("garbage"), Duration::ZERO);
    }

    #[test]
    fn this_process_threads_are_found_by_name_and_their_time_counted() {
        let busy = std::thread::Builder::new()
            .name("inlet-writer".into())
            .spawn(|| {
                let meter = Meter::start(std::process::id());
                // Spin until the writer's own time shows (ticks are 10 ms).
                let started = std::time::Instant::now();
                while started.elapsed() < Duration::from_secs(10) {
                    let used = meter.stop(1);
                    if used.role("writer") >= 20_000.0 {
                        return Some(used);
                    }
                }
                None
            })
            .unwrap();
        let used = busy
            .join()
            .unwrap()
            .expect("20 ms of the writer's CPU in 10 s");
        // The process's time is its threads' summed, each rounded to a tick on its own.
        assert!(used.server + 10_000.0 >= used.role("writer"));
        assert!(used.split().contains("writer"));
        assert_eq!(used.roles.last().unwrap().0, "other");
    }
}
