//! Request bodies: admitted against one global budget of bytes before they are read, read
//! within a time limit, inflated when the client compressed them, and refused as soon as
//! they pass their size limit (which applies to the inflated bytes).

use crate::event::Reason;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, HeaderMap};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Beyond a body's limit, how much more is read and thrown away before answering, so that a
/// client still writing gets the answer instead of a connection reset.
const DRAIN_MAX: u64 = 1 << 20;

/// How long a request waits for room in the budget before it is answered 503.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// The bytes of request bodies that may be in memory at once, over all requests. A request
/// reserves its declared length (or, when the length is unknown or the body is compressed,
/// its limit) before a byte of its body is read; the reservation lives as long as the body's
/// bytes do, through decoding and the writer's queue, and is returned when the last copy is
/// dropped.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    pub fn new(total: usize) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes reserved by requests right now.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Reserves `n` bytes, waiting at most [`ADMISSION_WAIT`].
    async fn reserve(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(n.min(self.total)).unwrap_or(u32::MAX);
        tokio::time::timeout(ADMISSION_WAIT, self.bytes.clone().acquire_many_owned(n))
            .await
            .ok()?
            .ok()
    }
}

/// A body's bytes together with their share of the budget.
struct Admitted {
    buf: BytesMut,
    _reservation: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Admitted {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// How the client encoded its body (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped per RFC 9110, though some clients send raw deflate;
    /// both are accepted.
    Deflate,
}

fn coding(headers: &HeaderMap) -> Result<Coding, Reason> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Coding::Identity);
    };
    let value = value.to_str().map_err(|_| Reason::UnsupportedEncoding)?;
    let value = value.trim();
    if value.eq_ignore_ascii_case("identity") || value.is_empty() {
        Ok(Coding::Identity)
    } else if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
        Ok(Coding::Gzip)
    } else if value.eq_ignore_ascii_case("deflate") {
        Ok(Coding::Deflate)
    } else {
        Err(Reason::UnsupportedEncoding)
    }
}

/// Reads a request body of at most `limit` bytes (after inflating), within `timeout`.
///
/// The request first reserves room in `budget`; when none frees up within
/// [`ADMISSION_WAIT`] the body is read and thrown away and the answer is
/// [`Reason::Overloaded`] (503 with `Retry-After`). A declared `Content-Length` far over the
/// limit is refused before anything is read.
pub async fn read(
    budget: &BodyBudget,
    timeout: Duration,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Reason> {
    let headers = req.headers();
    let coding = coding(headers)?;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if coding == Coding::Identity && declared.is_some_and(|len| len > limit as u64 + DRAIN_MAX) {
        return Err(Reason::BodyTooLarge);
    }
    let reserve = match (coding, declared) {
        (Coding::Identity, Some(len)) => (len as usize).min(limit),
        // Unknown length, or unknown until inflated: the most it may grow to.
        _ => limit,
    };
    // Set once the request is refused for want of room: then a client too slow to finish
    // sending the drained body still hears 503 and when to retry, not 408.
    let refused = std::sync::atomic::AtomicBool::new(false);
    let read = async {
        let mut body = req.into_body();
        let Some(reservation) = budget.reserve(reserve).await else {
            refused.store(true, std::sync::atomic::Ordering::Relaxed);
            drain(&mut body, limit as u64 + DRAIN_MAX).await;
            return Err(Reason::Overloaded);
        };
        let capacity = match coding {
            Coding::Identity => reserve,
            _ => 8192.min(limit),
        };
        let mut sink = Sink {
            buf: BytesMut::with_capacity(capacity),
            limit,
        };
        let mut inflater = Inflater::new(coding);
        let mut seen: u64 = 0;
        let mut over = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Reason::BodyUnreadable)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len() as u64;
            if over {
                if seen > limit as u64 + DRAIN_MAX {
                    break;
                }
                continue;
            }
            match inflater.push(&mut sink, &data) {
                Ok(()) => {}
                Err(Reason::BodyTooLarge) => over = true,
                Err(other) => return Err(other),
            }
        }
        if over {
            return Err(Reason::BodyTooLarge);
        }
        inflater.finish(&mut sink)?;
        // Give back what was reserved but not used.
        let mut reservation = reservation;
        let used = u32::try_from(sink.buf.len()).unwrap_or(u32::MAX);
        if let Some(extra) = (reservation.num_permits() as u32)
            .checked_sub(used.max(1))
            .filter(|e| *e > 0)
        {
            drop(reservation.split(extra as usize));
        }
        Ok(Bytes::from_owner(Admitted {
            buf: sink.buf,
            _reservation: Some(reservation),
        }))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(answer) => answer,
        Err(_) if refused.load(std::sync::atomic::Ordering::Relaxed) => Err(Reason::Overloaded),
        Err(_) => Err(Reason::RequestTimeout),
    }
}

/// Reads and throws away up to `max` bytes of a body the answer does not depend on.
async fn drain(body: &mut Incoming, max: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > max {
                return;
            }
        }
    }
}

/// Where (inflated) body bytes go: refuses to grow past `limit`.
struct Sink {
    buf: BytesMut,
    limit: usize,
}

impl std::io::Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "body over its limit",
            ));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns the body's bytes as they arrive into the bytes the client encoded.
enum Inflater {
    Identity,
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    /// Decided on the first bytes: zlib-wrapped or raw.
    Deflate(Option<DeflateKind>, Vec<u8>),
}

enum DeflateKind {
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    Raw(flate2::write::DeflateDecoder<Vec<u8>>),
}

/// How many inflated bytes one step may produce before they are moved to the sink (and the
/// limit checked): a bomb is stopped after at most this much more than the limit.
const STEP: usize = 16 << 10;

impl Inflater {
    fn new(coding: Coding) -> Inflater {
        match coding {
            Coding::Identity => Inflater::Identity,
            Coding::Gzip => Inflater::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            Coding::Deflate => Inflater::Deflate(None, Vec::new()),
        }
    }

    fn push(&mut self, sink: &mut Sink, data: &[u8]) -> Result<(), Reason> {
        match self {
            Inflater::Identity => sink.write_all(data).map_err(too_large),
            Inflater::Gzip(d) => inflate(d, sink, data),
            Inflater::Deflate(kind @ None, head) => {
                head.extend_from_slice(data);
                if head.len() < 2 {
                    return Ok(());
                }
                let zlib = is_zlib_header(head[0], head[1]);
                let pending = std::mem::take(head);
                let k = kind.insert(if zlib {
                    DeflateKind::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
                } else {
                    DeflateKind::Raw(flate2::write::DeflateDecoder::new(Vec::new()))
                });
                k.push(sink, &pending)
            }
            Inflater::Deflate(Some(k), _) => k.push(sink, data),
        }
    }

    fn finish(self, sink: &mut Sink) -> Result<(), Reason> {
        match self {
            Inflater::Identity => Ok(()),
            Inflater::Gzip(d) => finish(d, sink),
            Inflater::Deflate(None, head) if head.is_empty() => Ok(()),
            Inflater::Deflate(None, _) => Err(Reason::BodyUnreadable),
            Inflater::Deflate(Some(DeflateKind::Zlib(d)), _) => finish(d, sink),
            Inflater::Deflate(Some(DeflateKind::Raw(d)), _) => finish(d, sink),
        }
    }
}

impl DeflateKind {
    fn push(&mut self, sink: &mut Sink, data: &[u8]) -> Result<(), Reason> {
        match self {
            DeflateKind::Zlib(d) => inflate(d, sink, data),
            DeflateKind::Raw(d) => inflate(d, sink, data),
        }
    }
}

/// RFC 1950: compression method 8 and a header checksum divisible by 31.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

/// The decoders of flate2 that write into a `Vec`.
trait Decoder: std::io::Write {
    fn out(&mut self) -> &mut Vec<u8>;
    fn done(self) -> std::io::Result<Vec<u8>>;
}

macro_rules! decoder {
    ($t:ty) => {
        impl Decoder for $t {
            fn out(&mut self) -> &mut Vec<u8> {
                self.get_mut()
            }
            fn done(self) -> std::io::Result<Vec<u8>> {
                self.finish()
            }
        }
    };
}
decoder!(flate2::write::GzDecoder<Vec<u8>>);
decoder!(flate2::write::ZlibDecoder<Vec<u8>>);
decoder!(flate2::write::DeflateDecoder<Vec<u8>>);

/// Feeds `data` to the decoder in small steps, moving what it inflated into the sink after
/// each, so that the inflated size is checked as it grows.
fn inflate(d: &mut impl Decoder, sink: &mut Sink, mut data: &[u8]) -> Result<(), Reason> {
    while !data.is_empty() {
        let n = d
            .write(&data[..data.len().min(STEP / 16)])
            .map_err(|_| Reason::BodyUnreadable)?;
        if n == 0 {
            // The stream ended; bytes after it are not part of the body.
            return Err(Reason::BodyUnreadable);
        }
        data = &data[n..];
        let out = d.out();
        sink.write_all(out).map_err(too_large)?;
        out.clear();
    }
    Ok(())
}

fn finish(d: impl Decoder, sink: &mut Sink) -> Result<(), Reason> {
    let rest = d.done().map_err(|_| Reason::BodyUnreadable)?;
    sink.write_all(&rest).map_err(too_large)
}

fn too_large(_: std::io::Error) -> Reason {
    Reason::BodyTooLarge
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn inflate_all(
        coding: Coding,
        data: &[u8],
        limit: usize,
        chunk: usize,
    ) -> Result<Vec<u8>, Reason> {
        let mut sink = Sink {
            buf: BytesMut::new(),
            limit,
        };
        let mut inf = Inflater::new(coding);
        for c in data.chunks(chunk.max(1)) {
            inf.push(&mut sink, c)?;
        }
        inf.finish(&mut sink)?;
        Ok(sink.buf.to_vec())
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_coding_round_trips_in_any_chunking() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| i.to_string().into_bytes())
            .collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&text).unwrap();
        let zlib = z.finish().unwrap();
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        r.write_all(&text).unwrap();
        let raw = r.finish().unwrap();
        for chunk in [1, 7, 4096, 1 << 20] {
            assert_eq!(
                inflate_all(Coding::Gzip, &gzip(&text), 1 << 20, chunk).unwrap(),
                text
            );
            assert_eq!(
                inflate_all(Coding::Deflate, &zlib, 1 << 20, chunk).unwrap(),
                text
            );
            assert_eq!(
                inflate_all(Coding::Deflate, &raw, 1 << 20, chunk).unwrap(),
                text
            );
            assert_eq!(
                inflate_all(Coding::Identity, &text, 1 << 20, chunk).unwrap(),
                text
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_unreadable() {
        // 64 MiB of zeros compress to about 64 KiB.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert_eq!(
            inflate_all(Coding::Gzip, &bomb, 64 << 10, 1 << 20),
            Err(Reason::BodyTooLarge)
        );
        assert_eq!(
            inflate_all(Coding::Gzip, b"not gzip at all", 1 << 20, 4),
            Err(Reason::BodyUnreadable)
        );
        // A truncated stream is not a whole body.
        let good = gzip(b"{\"a\":1}");
        assert_eq!(
            inflate_all(Coding::Gzip, &good[..good.len() - 4], 1 << 20, 3),
            Err(Reason::BodyUnreadable)
        );
    }

    #[test]
    fn codings_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(coding(&h), Ok(Coding::Identity));
        for (v, want) in [
            ("gzip", Ok(Coding::Gzip)),
            ("GZIP", Ok(Coding::Gzip)),
            ("x-gzip", Ok(Coding::Gzip)),
            ("deflate", Ok(Coding::Deflate)),
            ("identity", Ok(Coding::Identity)),
            ("br", Err(Reason::UnsupportedEncoding)),
            ("gzip, gzip", Err(Reason::UnsupportedEncoding)),
        ] {
            h.insert(CONTENT_ENCODING, v.parse().unwrap());
            assert_eq!(coding(&h), want, "{v}");
        }
    }
}
