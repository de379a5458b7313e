//! The load generator: C keep-alive HTTP/1.1 connections (hyper's client) posting single
//! events or bulks of N, with unique uuid4-like ids or a chosen share of resubmitted ones.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where resubmitted ids come from: the unique ids `0..count` of the id stream `seed`.
#[derive(Debug, Clone, Copy)]
pub struct IdPool {
    pub seed: u64,
    pub count: u64,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Workload {
    pub addr: SocketAddr,
    pub key: String,
    /// Events per request: 1 = `POST /s2s/event`, more = `POST /s2s/events/bulk`.
    pub bulk: usize,
    pub conns: usize,
    /// Stop after this many requests ...
    pub requests: Option<u64>,
    /// ... or after this long, whichever comes first.
    pub duration: Option<Duration>,
    /// Share of events (0..=1) whose id is one sent before.
    pub dup_share: f64,
    /// Resubmitted ids are taken from this pool; `None` = from this run's own unique ids.
    pub dup_pool: Option<IdPool>,
    /// Unique ids are `id(seed, n)` for n = first_unique, first_unique + 1, ...
    pub seed: u64,
    pub first_unique: u64,
    /// Open-loop requests per second over all connections; latency is then measured from
    /// each request's scheduled start, so a stalled server cannot hide its queueing.
    pub rate: Option<f64>,
}

/// What a run saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub elapsed: Duration,
    pub requests: u64,
    pub events_sent: u64,
    /// Events the server acknowledged as stored (`accepted` in 2xx answers).
    pub accepted: u64,
    pub duplicates: u64,
    /// Events refused inside a 2xx bulk answer.
    pub rejected_in_2xx: u64,
    /// Non-2xx answers by status; status 0 = connection error.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Unique ids issued (the next run can resubmit `0..unique_issued`).
    pub unique_issued: u64,
    /// Sorted request latencies in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Report {
    pub fn events_per_sec(&self) -> f64 {
        self.events_sent as f64 / self.elapsed.as_secs_f64()
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency quantile `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    pub fn errors(&self) -> u64 {
        self.non_2xx.values().sum()
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} requests, {} events in {:.2} s: {:.0} events/s, {:.0} requests/s; \
             accepted {}, duplicate {}, rejected {}; latency ms p50 {:.2} p95 {:.2} p99 {:.2} max {:.2}",
            self.requests,
            self.events_sent,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            self.requests_per_sec(),
            self.accepted,
            self.duplicates,
            self.rejected_in_2xx,
            self.quantile_ms(0.5),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0),
        );
        if self.non_2xx.is_empty() {
            s.push_str("; no non-2xx");
        } else {
            s.push_str("; non-2xx:");
            for (status, n) in &self.non_2xx {
                let _ = write!(s, " {}×{n}", status_name(*status));
            }
        }
        s
    }
}

fn status_name(status: u16) -> String {
    if status == 0 {
        "conn-error".into()
    } else {
        status.to_string()
    }
}

/// SplitMix64: a fast, well-mixed stream for ids and choices (not for secrets).
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `n`th unique id of stream `seed`, formatted like a uuid4.
pub fn event_id(seed: u64, n: u64) -> String {
    let a = splitmix(seed ^ splitmix(n));
    let b = splitmix(a ^ 0x5555_5555_5555_5555);
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// One event as the bench sends it (about 250 bytes of JSON, like a typical purchase).
pub fn event_json(out: &mut String, id: &str, n: u64) {
    let _ = write!(
        out,
        r#"{{"event_id":"{id}","event_name":"purchase","event_ts_ms":{},"install_uuid":"{:032x}","user_id":"u{}","revenue":{}.99,"currency":"EUR","props":{{"level":{},"store":"google"}}}}"#,
        1_764_000_000_000u64 + n % 86_400_000,
        u128::from(splitmix(n)) << 64 | u128::from(splitmix(!n)),
        n % 100_000,
        n % 50,
        n % 80,
    );
}

/// `INLET_BENCH_CONTEXT=1`: each event also carries `context.ip` and `context.user_agent`
/// (for the cost of enrichment, `[enrich]`); `=enriched`: and the `context.geo` and
/// `context.device` enrichment would add (a control: the cost of storing them, without
/// enrichment); `=padded`: as `1`, each event followed by as many spaces as `enriched` adds
/// (the request bodies, kept raw, of `enriched`; the stored events of `1`).
static WITH_CONTEXT: std::sync::LazyLock<Option<bool>> =
    std::sync::LazyLock::new(|| match std::env::var("INLET_BENCH_CONTEXT").as_deref() {
        Ok("1" | "padded") => Some(false),
        Ok("enriched") => Some(true),
        _ => None,
    });
static PADDED: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var("INLET_BENCH_CONTEXT").is_ok_and(|v| v == "padded"));

/// Adds `context` to the event just written, as one backend's traffic repeats them: each
/// of the load's 100,000 users (`user_id`) has a home address and, one in four, a mobile
/// one it also uses, and one of a handful of real user agents.
fn with_context(out: &mut String, n: u64, enriched: bool) {
    const AGENTS: [&str; 6] = [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
        "MyGame/2.3.1 CFNetwork/1490.0.4 Darwin/23.2.0",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
        "Dalvik/2.1.0 (Linux; U; Android 13; SM-S911B Build/TP1A.220624.014)",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    ];
    // What enrichment adds for each agent (DB-IP city lite: country, region, city).
    const DEVICES: [&str; 6] = [DEVICE_0, DEVICE_1, DEVICE_2, DEVICE_3, DEVICE_4, DEVICE_5];
    const GEO: [&str; 6] = [GEO_0, GEO_1, GEO_2, GEO_3, GEO_4, GEO_5];
    out.pop(); // the event's closing brace
    let user = splitmix(n % 100_000);
    let roams = (user >> 40).is_multiple_of(4) && splitmix(n).is_multiple_of(3);
    let h = if roams { splitmix(!user) } else { user };
    let _ = write!(
        out,
        r#","context":{{"ip":"{}.{}.{}.{}","user_agent":"{}""#,
        [81, 2, 85, 151, 203, 24][(h % 6) as usize],
        (h >> 8) & 0xff,
        (h >> 16) & 0xff,
        1 + (h >> 24) % 254,
        AGENTS[((user >> 32) % AGENTS.len() as u64) as usize],
    );
    if enriched {
        let _ = write!(
            out,
            r#","geo":{},"device":{}"#,
            GEO[(h % 6) as usize],
            DEVICES[((user >> 32) % AGENTS.len() as u64) as usize],
        );
    }
    out.push_str("}}");
    if *PADDED {
        let added = r#","geo":,"device":"#.len()
            + GEO[(h % 6) as usize].len()
            + DEVICES[((user >> 32) % AGENTS.len() as u64) as usize].len();
        out.extend(std::iter::repeat_n(' ', added));
    }
}

// `context.geo` and `context.device` of the shape and size enrichment writes for the load's
// addresses and agents (the control of `INLET_BENCH_CONTEXT=enriched`).
const GEO_0: &str = r#"{"country":"DE","region":"Bavaria","city":"Munich"}"#;
const GEO_1: &str = r#"{"country":"FR","region":"Île-de-France","city":"Paris"}"#;
const GEO_2: &str = r#"{"country":"GB","region":"England","city":"London"}"#;
const GEO_3: &str = r#"{"country":"IT","region":"Lombardy","city":"Milan"}"#;
const GEO_4: &str = r#"{"country":"JP","region":"Tokyo","city":"Chiyoda"}"#;
const GEO_5: &str = r#"{"country":"US","region":"Texas","city":"Austin"}"#;
const DEVICE_0: &str = r#"{"type":"mobile","bot":false,"os":"iOS","os_version":"17.2","browser":"Mobile Safari","browser_version":"17.2","brand":"Apple","model":"iPhone"}"#;
const DEVICE_1: &str = r#"{"type":"mobile","bot":false,"os":"iOS","os_version":"17.2","browser":"CFNetwork","browser_version":"1490.0.4","brand":"Apple","model":"iOS-Device"}"#;
const DEVICE_2: &str = r#"{"type":"mobile","bot":false,"os":"Android","os_version":"14","browser":"Chrome Mobile","browser_version":"120.0.6099","brand":"Google","model":"Pixel 8"}"#;
const DEVICE_3: &str = r#"{"type":"mobile","bot":false,"os":"Android","os_version":"13","brand":"Samsung","model":"SM-S911B"}"#;
const DEVICE_4: &str = r#"{"type":"desktop","bot":false,"os":"Windows","os_version":"10","browser":"Chrome","browser_version":"120.0.0"}"#;
const DEVICE_5: &str = r#"{"type":"desktop","bot":false,"os":"Mac OS X","os_version":"10.15.7","browser":"Safari","browser_version":"17.2","brand":"Apple","model":"Mac"}"#;

/// The counts of an inlet answer (single: `accepted` + `duplicate`; bulk: the three counts).
#[derive(Default, serde::Deserialize)]
struct Counts {
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
    #[serde(default)]
    rejected: u64,
    #[serde(default)]
    duplicate: bool,
}

/// The counts of an answer. inlet writes them first, so they are read from the head of
/// the body; anything else falls back to a full parse.
fn counts(body: &[u8]) -> Counts {
    fn number_after(head: &str, key: &str) -> Option<u64> {
        let rest = &head[head.find(key)? + key.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    }
    let head = std::str::from_utf8(&body[..body.len().min(120)]).unwrap_or("");
    if head.starts_with(r#"{"accepted":"#)
        && head.contains(r#""results":"#)
        && let (Some(accepted), Some(duplicates), Some(rejected)) = (
            number_after(head, r#""accepted":"#),
            number_after(head, r#""duplicates":"#),
            number_after(head, r#""rejected":"#),
        )
    {
        return Counts {
            accepted,
            duplicates,
            rejected,
            duplicate: false,
        };
    }
    serde_json::from_slice(body).unwrap_or_default()
}

struct Shared {
    w: Workload,
    next_request: AtomicU64,
    next_unique: AtomicU64,
    started: Instant,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    events_sent: u64,
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    non_2xx: BTreeMap<u16, u64>,
    latencies_us: Vec<u32>,
}

/// Runs `w` to completion on the current tokio runtime.
pub async fn run(w: Workload) -> Report {
    assert!(
        w.bulk >= 1 && w.conns >= 1,
        "bulk and conns must be at least 1"
    );
    let shared = Arc::new(Shared {
        next_request: AtomicU64::new(0),
        next_unique: AtomicU64::new(w.first_unique),
        started: Instant::now(),
        w,
    });
    let workers: Vec<_> = (0..shared.w.conns)
        .map(|i| tokio::spawn(worker(shared.clone(), i as u64)))
        .collect();
    let mut total = Tally::default();
    for h in workers {
        let t = h.await.expect("load worker panicked");
        total.requests += t.requests;
        total.events_sent += t.events_sent;
        total.accepted += t.accepted;
        total.duplicates += t.duplicates;
        total.rejected += t.rejected;
        for (k, v) in t.non_2xx {
            *total.non_2xx.entry(k).or_default() += v;
        }
        total.latencies_us.extend(t.latencies_us);
    }
    let elapsed = shared.started.elapsed();
    total.latencies_us.sort_unstable();
    Report {
        elapsed,
        requests: total.requests,
        events_sent: total.events_sent,
        accepted: total.accepted,
        duplicates: total.duplicates,
        rejected_in_2xx: total.rejected,
        non_2xx: total.non_2xx,
        unique_issued: shared.next_unique.load(Ordering::SeqCst),
        latencies_us: total.latencies_us,
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn worker(s: Arc<Shared>, worker_no: u64) -> Tally {
    let w = &s.w;
    let mut tally = Tally::default();
    let mut rng = splitmix(w.seed ^ (worker_no + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let path = if w.bulk == 1 {
        "/s2s/event"
    } else {
        "/s2s/events/bulk"
    };
    let auth = format!("Bearer {}", w.key);
    let mut sender: Option<Sender> = None;
    let mut body = String::new();
    loop {
        let i = s.next_request.fetch_add(1, Ordering::Relaxed);
        if w.requests.is_some_and(|max| i >= max)
            || w.duration.is_some_and(|d| s.started.elapsed() >= d)
        {
            break;
        }
        body.clear();
        if w.bulk > 1 {
            body.push_str(r#"{"events":["#);
        }
        for e in 0..w.bulk {
            if e > 0 {
                body.push(',');
            }
            rng = splitmix(rng);
            let resubmit = (rng >> 11) as f64 / (1u64 << 53) as f64 <= w.dup_share;
            let (seed, n) = match (resubmit && w.dup_share > 0.0, w.dup_pool) {
                (true, Some(pool)) if pool.count > 0 => (pool.seed, rng % pool.count),
                (true, None) => {
                    let issued = s.next_unique.load(Ordering::Relaxed) - w.first_unique;
                    if issued == 0 {
                        (w.seed, s.next_unique.fetch_add(1, Ordering::Relaxed))
                    } else {
                        (w.seed, w.first_unique + rng % issued)
                    }
                }
                _ => (w.seed, s.next_unique.fetch_add(1, Ordering::Relaxed)),
            };
            event_json(&mut body, &event_id(seed, n), n);
            if let Some(enriched) = *WITH_CONTEXT {
                with_context(&mut body, n, enriched);
            }
        }
        if w.bulk > 1 {
            body.push_str("]}");
        }
        let scheduled = w
            .rate
            .map(|r| s.started + Duration::from_secs_f64(i as f64 / r));
        if let Some(at) = scheduled {
            tokio::time::sleep_until(at.into()).await;
        }
        let t0 = scheduled.unwrap_or_else(Instant::now);
        let req = Request::post(path)
            .header(header::HOST, w.addr.to_string())
            .header(header::AUTHORIZATION, &auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("a valid request");
        let answer = send(&mut sender, w.addr, req).await;
        let took = t0.elapsed();
        tally.latencies_us.push(took.as_micros() as u32);
        if SLOW_MS.is_some_and(|ms| took.as_millis() >= ms) {
            // When it was due, on the wall clock, to set beside the server's log.
            let due = std::time::SystemTime::now() - took;
            let due = due
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!(
                "slow request: due at {:.3} s, took {} ms",
                due.as_secs_f64(),
                took.as_millis()
            );
        }
        tally.requests += 1;
        tally.events_sent += w.bulk as u64;
        match answer {
            Some((status, bytes)) if (200..300).contains(&status) => {
                // Only the counts: per-event results are skipped, not built, so the client
                // spends little of the machine's CPU on them.
                let c = counts(&bytes);
                tally.accepted += c.accepted;
                tally.duplicates += c.duplicates + u64::from(c.duplicate);
                tally.rejected += c.rejected;
            }
            Some((status, _)) => *tally.non_2xx.entry(status).or_default() += 1,
            None => *tally.non_2xx.entry(0).or_default() += 1,
        }
    }
    tally
}

/// `INLET_BENCH_SLOW_MS`: each request slower than this is printed (stderr) with when it was
/// due, to tell what a latency tail waits for against the server's log.
static SLOW_MS: std::sync::LazyLock<Option<u128>> = std::sync::LazyLock::new(|| {
    std::env::var("INLET_BENCH_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
});

/// Sends `req` on the worker's connection, reconnecting once if it was closed.
pub(crate) async fn send(
    sender: &mut Option<Sender>,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> Option<(u16, Bytes)> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = connect(addr).await.ok();
    }
    let s = sender.as_mut()?;
    if s.ready().await.is_err() {
        *sender = None;
        return None;
    }
    match s.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.into_body().collect().await {
                Ok(b) => Some((status, b.to_bytes())),
                Err(_) => {
                    *sender = None;
                    None
                }
            }
        }
        Err(_) => {
            *sender = None;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_uuid4_and_differ() {
        let a = event_id(1, 0);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, event_id(1, 1));
        assert_ne!(a, event_id(2, 0));
        assert_eq!(a, event_id(1, 0));
    }

    #[test]
    fn counts_are_read_from_the_head_or_parsed() {
        let bulk = br#"{"accepted":12,"duplicates":3,"rejected":0,"results":[{"event_id":"a"}]}"#;
        let c = counts(bulk);
        assert_eq!((c.accepted, c.duplicates, c.rejected), (12, 3, 0));
        let single = br#"{"accepted":0,"duplicate":true,"event_id":"x"}"#;
        let c = counts(single);
        assert_eq!((c.accepted, c.duplicate), (0, true));
    }

    #[test]
    fn event_json_parses() {
        let mut s = String::new();
        event_json(&mut s, &event_id(3, 7), 7);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["event_name"], "purchase");
    }
}
