//! What every request handler shares, built once at the top and passed down: the checked
//! config, the store, the writer, the outcome counters, the rate limiter and the body budget.
//! Defined below `server`, `ingest` and `admin` so that none of them imports the others' state.

use crate::config::Config;
use crate::event::Reason;
use crate::http::body::{self, BodyBudget};
use crate::identity::indexer::Indexer;
use crate::ratelimit::RateLimiter;
use crate::stats::Counters;
use crate::store::Store;
use crate::store::writer::Writer;
use bytes::Bytes;
use hyper::Request;
use hyper::body::Incoming;
use std::sync::Arc;

/// The shared state of the ingest path (and the parts of it the admin and metrics read).
pub struct Context {
    pub config: Config,
    pub store: Store,
    pub writer: Writer,
    pub counters: Counters,
    pub rate_limiter: RateLimiter,
    /// Request bodies in memory, over all requests.
    pub bodies: BodyBudget,
    /// The identity indexer listening to the writer (its graph, its lag), when one runs.
    pub indexer: Option<Arc<Indexer>>,
    /// Each app's `privacy::StoreLess` policy, applied in `ingest::submit`.
    pub store_less: crate::privacy::Policies,
    /// Each app's drop rules, compiled per configuration generation, and their counts.
    pub rules: crate::rules::Rules,
    /// Refused events on their way to the quarantine (`ingest::quarantine`).
    pub quarantine: crate::store::quarantine::Keeper,
    /// Live tail, health per app and key, alert state (`watch`).
    pub watch: crate::watch::Watch,
    /// Cluster mode: this node, which routes each submission to its partition's owner.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Enrichment answers kept once in the store (`store::enrichments`): set when enrichment
    /// is on, outside cluster mode (where records travel between nodes as they are).
    pub enrichments: Option<Arc<crate::store::enrichments::Dictionary>>,
}

impl Context {
    pub fn new(config: Config, store: Store, writer: Writer) -> Context {
        Context {
            bodies: BodyBudget::new(config.body_budget),
            watch: crate::watch::Watch::new(config.max_tails),
            config,
            store,
            writer,
            counters: Default::default(),
            rate_limiter: Default::default(),
            indexer: None,
            store_less: Default::default(),
            rules: Default::default(),
            quarantine: Default::default(),
            cluster: None,
            enrichments: None,
        }
    }

    /// Reads a request body of at most `limit` bytes (inflated, when the client compressed
    /// it), admitted against the body budget and within the configured body timeout.
    pub async fn read_body(&self, req: Request<Incoming>, limit: usize) -> Result<Bytes, Reason> {
        body::read(&self.bodies, self.config.body_timeout, req, limit).await
    }
}
