//! Process figures for `/metrics` that are not stored anywhere else: histograms of request
//! latency and of commits, and the free space of the data dir's file system.
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

/// The status class of an answered request: `2xx`, `4xx`, `5xx`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeClass {
    pub code: String,
}

fn request_histogram() -> Histogram {
    // 0.1 ms .. ~3.3 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Request latency by status class.
pub struct RequestMetrics {
    pub seconds: Family<CodeClass, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            seconds: Family::new_with_constructor(request_histogram),
        }
    }
}

impl RequestMetrics {
    pub fn observe(&self, status: hyper::StatusCode, seconds: f64) {
        let code = format!("{}xx", status.as_u16() / 100);
        self.seconds
            .get_or_create(&CodeClass { code })
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

#[cfg(test)]
mod tests {
    #[test]
    fn free_disk_of_a_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::free_disk_bytes(dir.path()).unwrap() > 0);
        assert!(super::free_disk_bytes(&dir.path().join("missing")).is_err());
    }
}
