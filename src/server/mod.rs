//! HTTP: the accept loop, the router, body reading with limits, and the one place where
//! outcomes become HTTP responses ([`reply`]).

pub mod metrics;
pub mod reply;

use crate::config::Config;
use crate::event::Reason;
use crate::ingest;
use crate::ingest::gamerebellion as gr;
use crate::store::Store;
use crate::store::writer::Writer;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use reply::Reply;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Everything a request handler needs.
pub struct State {
    pub config: Config,
    pub store: Store,
    pub writer: Writer,
    pub counters: crate::stats::Counters,
    pub rate_limiter: crate::ratelimit::RateLimiter,
    pub admin: crate::admin::AdminState,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Ingest and operations; the admin panel too unless it has its own listener.
    Main,
    /// Only the admin panel (`--admin-listen`).
    Admin,
}

/// Longest a graceful shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish (bounded by [`DRAIN_TIMEOUT`]) and returns.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_site(listener, state, shutdown, Site::Main).await
}

/// [`run`] for a listener that serves `site`.
pub async fn run_site(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
    site: Site,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tls = state
        .config
        .tls
        .as_ref()
        .map(|t| tokio_rustls::TlsAcceptor::from(t.server.clone()));
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let header_timeout = state.config.header_timeout;
        let conn_state = state.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                tokio::spawn(async move {
                    serve_conn(TokioIo::new(stream), conn_state, peer, site, watcher).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // The handshake gets the header timeout; nothing is read before it.
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_conn(TokioIo::new(tls), conn_state, peer, site, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight requests did not finish in time");
        }
    }
    Ok(())
}

/// Serves HTTP/1.1 on one accepted connection (plain or TLS) until it closes; graceful
/// shutdown lets its in-flight request finish first.
async fn serve_conn<I>(
    io: I,
    state: Arc<State>,
    peer: std::net::SocketAddr,
    site: Site,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let header_timeout = state.config.header_timeout;
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&state, req, peer, site).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// A response body: a whole buffer, or a stream (the admin API's export).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A buffered response as a [`Body`] response.
pub fn boxed(resp: Response<Full<Bytes>>) -> Response<Body> {
    resp.map(|b| b.map_err(|never| match never {}).boxed())
}

/// The router: method and path to handler.
async fn route(
    state: &State,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    site: Site,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let admin_here = match site {
        Site::Main => state.config.admin.listen.is_none(),
        Site::Admin => true,
    };
    let is_admin = path == "/admin" || path.starts_with("/admin/");
    if admin_here && method == Method::GET && path == "/admin/api/export" {
        // Streamed: the only answer that is not a buffered `Reply`.
        let resp = crate::admin::export(state, req).await;
        let status = resp.status().as_u16();
        state
            .counters
            .requests
            .observe(status, started.elapsed().as_secs_f64());
        tracing::debug!(%method, %path, status, %peer, "request (streamed)");
        return resp;
    }
    let reply = match (req.method(), path.as_str()) {
        _ if is_admin && admin_here => crate::admin::handle(state, req, peer).await,
        _ if site == Site::Admin => Reply::error(Reason::NotFound),
        (&Method::GET | &Method::HEAD, "/healthz") => Reply::text(200, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => metrics::readyz(state),
        (&Method::GET, "/metrics") => {
            metrics::metrics(state, req.headers().get(hyper::header::AUTHORIZATION))
        }
        (&Method::POST, "/s2s/event") => ingest::reflect_single(state, req).await,
        (&Method::POST, "/s2s/events/bulk") => ingest::reflect_bulk(state, req).await,
        (&Method::POST, "/api/v1/event") => gr::handle(state, req, gr::Endpoint::Event).await,
        (&Method::POST, "/api/v1/events") => gr::handle(state, req, gr::Endpoint::Batch).await,
        (&Method::POST, p) if p.starts_with(GR_SESSIONS) => match gr_session(p) {
            Some(kind) => gr::handle(state, req, gr::Endpoint::Session(kind)).await,
            None => gr::refuse(state, Reason::NotFound),
        },
        (&Method::GET | &Method::POST, "/event") => ingest::adjust::event(state, req).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/s2s/event" | "/s2s/events/bulk") => {
            Reply::error(Reason::MethodNotAllowed)
        }
        (_, "/api/v1/event" | "/api/v1/events") => gr::refuse(state, Reason::MethodNotAllowed),
        (_, p) if gr_session(p).is_some() => gr::refuse(state, Reason::MethodNotAllowed),
        (_, p) if p.starts_with(GR_SESSIONS) => gr::refuse(state, Reason::NotFound),
        (_, "/event") => Reply::adjust_error(Reason::MethodNotAllowed),
        (&Method::POST, "/v1/events") => ingest::datafly::handle(state, req).await,
        (_, "/v1/events") => Reply::datafly_error(Reason::MethodNotAllowed),
        (_, p) if ingest::appsflyer::parse_path(p).is_some() => {
            ingest::appsflyer::handle(state, req).await
        }
        _ => Reply::error(Reason::NotFound),
    };
    let status = reply.status;
    state
        .counters
        .requests
        .observe(status, started.elapsed().as_secs_f64());
    tracing::debug!(%method, %path, status, %peer, ms = started.elapsed().as_millis() as u64, "request");
    boxed(reply.into_response())
}

const GR_SESSIONS: &str = "/api/v1/sessions/";

/// The session kind of a GameRebellion `/api/v1/sessions/{start,stop,end}` path.
fn gr_session(path: &str) -> Option<crate::dialect::gamerebellion::SessionKind> {
    path.strip_prefix(GR_SESSIONS)
        .and_then(crate::dialect::gamerebellion::SessionKind::from_segment)
}

/// Beyond a body's limit, how much more is read and thrown away before answering 413, so
/// that a client still writing gets the answer instead of a connection reset.
const DRAIN_MAX: u64 = 1 << 20;

/// Reads a request body of at most `limit` bytes, within the configured body timeout.
/// A declared `Content-Length` far over the limit is refused before reading anything.
pub async fn read_body(
    state: &State,
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Reason> {
    let headers = req.headers();
    if let Some(enc) = headers.get(hyper::header::CONTENT_ENCODING)
        && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(Reason::UnsupportedEncoding);
    }
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64 + DRAIN_MAX) {
        return Err(Reason::BodyTooLarge);
    }
    let read = async {
        let mut body = req.into_body();
        let mut buf =
            bytes::BytesMut::with_capacity(declared.map_or(8192, |l| l as usize).min(limit));
        let mut seen: u64 = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Reason::BodyUnreadable)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen += data.len() as u64;
            if seen > limit as u64 + DRAIN_MAX {
                break;
            }
            if seen <= limit as u64 {
                buf.extend_from_slice(&data);
            }
        }
        if seen > limit as u64 {
            Err(Reason::BodyTooLarge)
        } else {
            Ok(buf.freeze())
        }
    };
    tokio::time::timeout(state.config.body_timeout, read)
        .await
        .unwrap_or(Err(Reason::RequestTimeout))
}
