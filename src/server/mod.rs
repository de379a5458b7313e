//! The accept loop and the router; [`State`] is what the listeners serve from.

pub mod conn;
pub mod control;
pub mod metrics;
mod start;
pub use start::*;

use crate::admin::AdminState;
use crate::clock::now_ms;
use crate::config::Config;
use crate::context::Context;
use crate::dialect::gamerebellion::SessionKind;
use crate::dialect::{Adjust, AppsFlyer, Datafly, GameRebellion, Native};
use crate::event::Reason;
use crate::http::{Body, Reply, boxed};
use crate::ingest;
use crate::store::Store;
use crate::store::writer::Writer;
use conn::{Guarded, InFlight, PeerSlots};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Everything the listeners serve from: the shared [`Context`] of the request handlers and
/// the admin panel's own state. Derefs to the context.
pub struct State {
    pub ctx: Context,
    pub admin: AdminState,
}

impl State {
    /// The state of a server from its config, store, writer and admin state.
    pub fn new(config: Config, store: Store, writer: Writer, admin: AdminState) -> State {
        State {
            ctx: Context::new(config, store, writer),
            admin,
        }
    }
}

impl std::ops::Deref for State {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.ctx
    }
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

/// HTTP/2 streams one connection may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

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
    let peers = PeerSlots::new(state.config.max_connections_per_peer);
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
                    crate::warn_throttled!("accept failed", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(peer_slot) = peers.take(peer.ip()) else {
            // Closed at once: the peer holds its share of connections already.
            state.counters.connections_refused.inc();
            crate::warn_throttled!(
                format!("peer limit {}", peer.ip()),
                peer = %peer.ip(),
                limit = state.config.max_connections_per_peer,
                "connection refused: the peer holds max_connections_per_peer already"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let in_flight = InFlight::default();
        let stream = Guarded::new(
            stream,
            in_flight.clone(),
            state.counters.connections_write_stalled.clone(),
            state.config.write_timeout,
            state.config.header_timeout,
        );
        let header_timeout = state.config.header_timeout;
        let conn_state = state.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let io = TokioIo::new(stream);
                    serve_conn(io, conn_state, peer, site, in_flight, watcher).await
                }
                // The handshake gets the header timeout; nothing is read before it.
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let io = TokioIo::new(tls);
                            serve_conn(io, conn_state, peer, site, in_flight, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(peer_slot);
            drop(permit);
        });
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

/// Serves one accepted connection (plain or TLS; HTTP/1.1, or HTTP/2 when the client
/// starts with its preface: ALPN `h2` over TLS or prior knowledge over plain TCP) until it
/// closes; graceful shutdown lets its in-flight requests finish first.
async fn serve_conn<I>(
    io: I,
    state: Arc<State>,
    peer: std::net::SocketAddr,
    site: Site,
    in_flight: InFlight,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let header_timeout = state.config.header_timeout;
    let service = service_fn(move |req| {
        let state = state.clone();
        let guard = in_flight.enter();
        async move {
            // The request counts as in flight until its body is sent: a streamed export
            // may take a while between rows without the connection being idle.
            let resp = route(&state, req, peer, site).await;
            Ok::<_, std::convert::Infallible>(resp.map(|body| conn::Held::new(body, guard)))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .max_header_list_size(64 << 10);
    let conn = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// The router: method and path to handler.
async fn route(
    state: &State,
    mut req: Request<Incoming>,
    peer: std::net::SocketAddr,
    site: Site,
) -> Response<Body> {
    let started = std::time::Instant::now();
    // Enrichment takes the client's address from here (`enrich::Enrich::client_ip`).
    req.extensions_mut().insert(crate::enrich::Peer(peer.ip()));
    let method = req.method().clone();
    let path = endpoint_path(req.uri().path()).to_owned();
    let admin_here = match site {
        Site::Main => state.config.admin.listen.is_none(),
        Site::Admin => true,
    };
    let is_admin = path == "/admin" || path.starts_with("/admin/");
    if admin_here && method == Method::GET && path == "/admin/api/tail" {
        // Streamed too (Server-Sent Events): `watch::tail`.
        let resp = crate::admin::watch::tail(&state.ctx, &state.admin, req).await;
        tracing::debug!(%method, %path, status = resp.status().as_u16(), %peer, "tail");
        return resp;
    }
    if admin_here && method == Method::GET && path == "/admin/api/export" {
        // Streamed: the only answer that is not a buffered `Reply`.
        let resp = crate::admin::export(&state.ctx, &state.admin, req).await;
        let status = resp.status();
        state
            .counters
            .requests
            .observe(ADMIN, status, started.elapsed().as_secs_f64());
        tracing::debug!(%method, %path, status = status.as_u16(), %peer, "request (streamed)");
        return resp;
    }
    let (endpoint, reply) = if is_admin && admin_here {
        let reply = crate::admin::handle(&state.ctx, &state.admin, req, peer).await;
        (ADMIN, reply)
    } else if path == "/" && admin_here && GET_HEAD.contains(&method) {
        // The first URL the log shows leads to the panel.
        let to_panel = Reply::text(StatusCode::FOUND, "the admin panel is at /admin/\n");
        ("/", to_panel.header("location", "/admin/".to_owned()))
    } else if site == Site::Admin {
        (
            UNMATCHED,
            ingest::refusal::<Native>(Reason::NotFound, now_ms()),
        )
    } else {
        match ROUTES.iter().find(|r| r.path.matches(&path)) {
            Some(r) if r.methods.contains(req.method()) => {
                (r.name, (r.handler)(state, req, peer).await)
            }
            Some(r) if r.methods.is_empty() => (r.name, (r.refuse)(state, Reason::NotFound)),
            Some(r) => (r.name, (r.refuse)(state, Reason::MethodNotAllowed)),
            None => (
                UNMATCHED,
                ingest::refusal::<Native>(Reason::NotFound, now_ms()),
            ),
        }
    };
    let status = reply.status;
    state
        .counters
        .requests
        .observe(endpoint, status, started.elapsed().as_secs_f64());
    tracing::debug!(%method, %path, status = status.as_u16(), %peer, ms = started.elapsed().as_millis() as u64, "request");
    boxed(reply.into_response())
}

/// One row of the router: the paths it serves, the methods it answers and its handler; a
/// request for its paths with another method is answered by `refuse` (the dialect's 405, or
/// its 404 for a row of no methods), so that each vendor answers in its own words on its own
/// paths. The first row whose path matches decides; no row matching is the native 404.
struct Route {
    /// The route's label on the request latency metric: its path pattern.
    name: &'static str,
    path: PathPattern,
    methods: &'static [Method],
    handler: Handler,
    refuse: fn(&State, Reason) -> Reply,
}

/// Which paths a [`Route`] serves (after [`endpoint_path`]).
enum PathPattern {
    Exact(&'static str),
    /// A path that passes the test.
    Matching(fn(&str) -> bool),
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => *p == path,
            PathPattern::Matching(test) => test(path),
        }
    }
}

/// A request handler; boxed once per request, so that the rows fit one table.
type Handler = for<'a> fn(&'a State, Request<Incoming>, SocketAddr) -> Handled<'a>;
type Handled<'a> = std::pin::Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A [`Handler`] from its body: `handler!(|state, req, peer| reply)`, where the body may
/// `.await`.
macro_rules! handler {
    (|$state:ident, $req:ident, $peer:ident| $body:expr) => {{
        fn handle<'a>(
            $state: &'a State,
            $req: Request<Incoming>,
            $peer: SocketAddr,
        ) -> Handled<'a> {
            Box::pin(async move { $body })
        }
        handle
    }};
}

const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];

/// The latency label of every request to the admin panel.
const ADMIN: &str = "/admin";
/// The latency label of a request no route serves.
const UNMATCHED: &str = "unmatched";

/// The router: method and path to handler. Adding a vendor adds its rows here.
static ROUTES: &[Route] = &[
    Route {
        name: "/healthz",
        path: PathPattern::Exact("/healthz"),
        methods: GET_HEAD,
        handler: handler!(|_s, _req, _peer| Reply::text(StatusCode::OK, "ok\n")),
        refuse: refuse::<Native>,
    },
    Route {
        name: "/readyz",
        path: PathPattern::Exact("/readyz"),
        methods: GET_HEAD,
        handler: handler!(|s, _req, _peer| metrics::readyz(s)),
        refuse: refuse::<Native>,
    },
    Route {
        name: "/metrics",
        path: PathPattern::Exact("/metrics"),
        methods: GET_HEAD,
        handler: handler!(|s, req, peer| metrics::metrics(
            s,
            req.headers().get(hyper::header::AUTHORIZATION),
            peer.ip()
        )),
        refuse: refuse::<Native>,
    },
    Route {
        name: "/s2s/event",
        path: PathPattern::Exact("/s2s/event"),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<Native>(s, req).await),
        refuse: refuse::<Native>,
    },
    Route {
        name: "/s2s/events/bulk",
        path: PathPattern::Exact("/s2s/events/bulk"),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<Native>(s, req).await),
        refuse: refuse::<Native>,
    },
    Route {
        name: "/api/v1/event",
        path: PathPattern::Exact("/api/v1/event"),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<GameRebellion>(s, req).await),
        refuse: refuse::<GameRebellion>,
    },
    Route {
        name: "/api/v1/events",
        path: PathPattern::Exact("/api/v1/events"),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<GameRebellion>(s, req).await),
        refuse: refuse::<GameRebellion>,
    },
    Route {
        name: "/api/v1/sessions/{kind}",
        path: PathPattern::Matching(|p| gr_session(p).is_some()),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<GameRebellion>(s, req).await),
        refuse: refuse::<GameRebellion>,
    },
    // Every answer under GameRebellion's prefix carries its rate limit headers.
    Route {
        name: "/api/v1/*",
        path: PathPattern::Matching(|p| p == "/api/v1" || p.starts_with("/api/v1/")),
        methods: &[],
        handler: handler!(|s, _req, _peer| refuse::<GameRebellion>(s, Reason::NotFound)),
        refuse: refuse::<GameRebellion>,
    },
    Route {
        name: "/event",
        path: PathPattern::Exact("/event"),
        methods: &[Method::GET, Method::POST],
        handler: handler!(|s, req, _peer| ingest::ingest::<Adjust>(s, req).await),
        refuse: refuse::<Adjust>,
    },
    Route {
        name: "/v1/events",
        path: PathPattern::Exact("/v1/events"),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<Datafly>(s, req).await),
        refuse: refuse::<Datafly>,
    },
    Route {
        name: "/v1/{bundle_id}/{method}",
        path: PathPattern::Matching(|p| crate::dialect::appsflyer::parse_path(p).is_some()),
        methods: POST,
        handler: handler!(|s, req, _peer| ingest::ingest::<AppsFlyer>(s, req).await),
        // Counted, as every AppsFlyer refusal is.
        refuse: |s, reason| ingest::refused::<AppsFlyer>(s, None, reason),
    },
];

/// A refusal by the router, in dialect `D`'s words.
fn refuse<D: crate::dialect::Dialect>(state: &State, reason: Reason) -> Reply {
    ingest::unrouted::<D>(state, reason)
}

/// The path an ingest request is routed by: one trailing slash is dropped, as vendors'
/// servers do, so `/s2s/event/` is `/s2s/event`. The admin panel's own paths keep theirs.
fn endpoint_path(path: &str) -> &str {
    if path.starts_with("/admin") {
        return path;
    }
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

/// The session kind of a GameRebellion `/api/v1/sessions/{start,stop,end}` path.
fn gr_session(path: &str) -> Option<SessionKind> {
    endpoint_path(path)
        .strip_prefix("/api/v1/sessions/")
        .and_then(SessionKind::from_segment)
}
