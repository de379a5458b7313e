//! Process figures for `/metrics` that are not stored anywhere else: histograms of request
//! latency and of commits, the free space of the data dir's file system, and the process's
//! own figures from `/proc/self` (the `process_*` metrics).
//!
//! Outcome counters live in [`crate::stats::Counters`] (the one source of truth, also read by
//! the admin overview); `server::metrics` renders both in the Prometheus/OpenMetrics text
//! format at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::path::Path;

/// Histograms of the writer thread.
pub struct WriterMetrics {
    /// Seconds from `begin_write` to `commit` returned (includes the fsync).
    pub commit_seconds: Histogram,
    /// Events per commit.
    pub batch_events: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            // 0.25 ms .. ~8 s
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 16)),
            // 1 .. 16384 events
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
        }
    }
}

/// Labels of a request's latency: the route that answered it (a pattern of the router's
/// table, `/admin` for the panel, `unmatched` for no route: never the raw path, so the
/// number of series stays bounded) and its status class (`2xx`, `4xx`, `5xx`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCode {
    pub endpoint: &'static str,
    pub code: &'static str,
}

fn request_histogram() -> Histogram {
    // 0.1 ms .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Request latency by route and status class.
pub struct RequestMetrics {
    pub seconds: Family<RouteCode, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            seconds: Family::new_with_constructor(request_histogram),
        }
    }
}

impl RequestMetrics {
    /// Counts a request answered by the route named `endpoint` (a `&'static str`: only the
    /// router's fixed names can be labels).
    pub fn observe(&self, endpoint: &'static str, status: hyper::StatusCode, seconds: f64) {
        let code = match status.as_u16() / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.seconds
            .get_or_create(&RouteCode { endpoint, code })
            .observe(seconds);
    }
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    // SAFETY: `statvfs` only writes into the zeroed struct we own, and `c` is a valid
    // NUL-terminated string for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The process's own figures, as Prometheus' client libraries export them (`process_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    /// Seconds since the epoch; `None` where `/proc/stat` is hidden (systemd's
    /// `ProcSubset=pid`), for the caller to fill in.
    pub start_time_seconds: Option<f64>,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` when it cannot (not Linux, `/proc` not mounted).
    pub fn read() -> Option<ProcessStats> {
        // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let mut p = parse_stat(&stat, ticks as f64, page as u64, boot)?;
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        p.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s));
        Some(p)
    }
}

/// Parses `/proc/<pid>/stat` (proc(5)): utime, stime and starttime in clock ticks, vsize
/// in bytes, rss in pages. `boot` is the `btime` of `/proc/stat`.
fn parse_stat(stat: &str, ticks: f64, page: u64, boot: Option<u64>) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `f[0]` is field 3 (state): field n is `f[n - 3]`.
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)?.saturating_mul(page),
        start_time_seconds: boot.map(|b| b as f64 + start as f64 / ticks),
        open_fds: 0,
        max_fds: None,
    })
}

fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_with_an_awkward_command_name() {
        let stat = "4242 (in) let (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 \
                    9 0 1000 123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let p = parse_stat(stat, 100.0, 4096, Some(1_700_000_000)).unwrap();
        assert_eq!(p.cpu_seconds, 2.0);
        assert_eq!(p.virtual_bytes, 123_456_789);
        assert_eq!(p.resident_bytes, 300 * 4096);
        assert_eq!(p.start_time_seconds, Some(1_700_000_010.0));
        assert_eq!(
            parse_stat(stat, 100.0, 4096, None)
                .unwrap()
                .start_time_seconds,
            None
        );
        assert_eq!(parse_stat("4242 (x) S 1 2", 100.0, 4096, None), None);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_reads_its_own_figures() {
        let p = ProcessStats::read().unwrap();
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds >= 3, "{p:?}");
        let start = p.start_time_seconds.unwrap();
        let now = crate::clock::now_ms() as f64 / 1000.0;
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} {now}"
        );
    }

    #[test]
    fn free_disk_of_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::free_disk_bytes(dir.path()).unwrap() > 0);
        assert!(super::free_disk_bytes(&dir.path().join("missing")).is_err());
    }
}
