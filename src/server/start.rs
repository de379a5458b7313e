//! `server::start`: the wiring of a serving process. Opens the store, starts the writer with
//! its listeners (the panel's tallies, the identity indexer), builds the shared state, binds
//! the listeners' sockets and the control socket, starts the retention task and the SIGHUP
//! TLS reload, and tells systemd (`sd_notify`) when it is ready and when it stops. `main` and
//! tests call it the same way.

use super::control;
use super::{Site, State};
use crate::admin::AdminState;
use crate::config::Config;
use crate::identity::Identity;
use crate::identity::indexer::Indexer;
use crate::ops::LOCK_WAIT;
use crate::store::writer::{Listeners, Outcome, SubmitError, Writer};
use crate::store::{self, Store};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A serving process, from [`start`] until [`Server::stop`].
pub struct Server {
    pub state: Arc<State>,
    /// Where the ingest site listens (and the admin site, without an admin listener).
    pub addr: SocketAddr,
    /// Where the admin panel is served.
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The accept loops: run on the caller's task by [`Server::run_until_signal`] (as `main`
    /// does, so they do not compete with the connections' tasks for the runtime's workers),
    /// or spawned by [`Server::spawn`] for a caller that goes on (tests).
    serving: Serving,

    socket: PathBuf,
    /// What systemd is told once [`Server::run_until_signal`] can take a SIGTERM.
    ready: String,
}

/// Opens the store in `config.data_dir` and serves it until [`Server::stop`].
pub async fn start(mut config: Config) -> anyhow::Result<Server> {
    let data = config.data_dir.clone();
    let fresh = !data.join(store::DB_FILE).exists();
    let store = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || open_waiting(&data)).await??
    };
    warn_if_shared(&data);
    let (admin, setup_code) = AdminState::new(&store, config.admin.clone())?;
    let first_app = match &setup_code {
        Some(_) => store.apps()?.into_iter().next(),
        None => None,
    };
    let indexer = Arc::new(Indexer::start(Identity::open(&store))?);
    let mut listeners: Listeners = vec![
        Arc::new(crate::admin::panel::Tallies),
        indexer.clone(),
        Arc::new(crate::privacy::Suppression::default()),
    ];
    let enrichments = match (&config.enrich, &config.cluster) {
        (Some(_), None) => {
            let dict = Arc::new(store::enrichments::Dictionary::load(&*store.db()?)?);
            listeners.push(dict.clone());
            Some(dict)
        }
        _ => None,
    };
    let cluster = match &config.cluster {
        Some(settings) => Some(
            crate::cluster::Cluster::join(settings, config.limits.bulk_body)
                .await
                .map_err(|e| anyhow::anyhow!("cluster mode: {e}"))?,
        ),
        None => None,
    };
    // Cluster mode: the node's name claimed, and the admin data caught up with the
    // engine's, before anything is served.
    if let Some(c) = &cluster {
        c.claim(&data)
            .await
            .map_err(|e| anyhow::anyhow!("cluster mode: {e}"))?;
        c.admin
            .join(&*store.db()?)
            .await
            .map_err(|e| anyhow::anyhow!("cluster mode: {e}"))?;
    }
    let hook = cluster
        .clone()
        .map(|c| c as Arc<dyn crate::store::writer::Commit>);
    let writer = Writer::start_with(&store, config.queue_bytes, listeners, hook)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    // The address bound (port 0 became a port): where the panel tells clients to send events.
    config.listen = addr;
    let admin_listener = match config.admin.listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a}"))?,
        ),
        None => None,
    };
    let admin_addr = match &admin_listener {
        Some(l) => l.local_addr()?,
        None => addr,
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let json_logs = config.log_format == crate::config::LogFormat::Json;
    let mut state = State::new(config, store, writer, admin);
    state.ctx.indexer = Some(indexer);
    state.ctx.cluster = cluster.clone();
    state.ctx.enrichments = enrichments;
    let state = Arc::new(state);
    if let Some(c) = &cluster {
        c.start(Arc::new(NodeLocal(Arc::downgrade(&state))));
    }
    let socket = control::serve(&data, state.clone()).context("binding the control socket")?;
    tokio::spawn(retention_task(state.clone()));
    if let Some(schedule) = state.config.backup.clone() {
        tokio::spawn(backup_task(state.clone(), schedule));
    }
    tokio::spawn(crate::logs::flush_task());
    if let Some(enrich) = state.config.enrich.clone() {
        tokio::spawn(enrich_task(enrich));
    }
    let s = state.clone();
    tokio::spawn(async move {
        let (interval, ca) = (s.config.alert_interval, s.config.webhook_ca.clone());
        crate::watch::alerts::run(&s.store, &s.writer, &s.watch, interval, ca).await
    });
    // Registered before the server says it listens, so that no SIGHUP finds the default
    // action (the end of the process) in place.
    match signal(SignalKind::hangup()) {
        Ok(hup) => {
            let enrich = state.config.enrich.clone();
            tokio::spawn(reload_on_hangup(hup, state.config.tls.clone(), enrich));
        }
        Err(e) => tracing::warn!(error = %e, "no SIGHUP handler: TLS reload is off"),
    }
    tracing::info!(data = %data.display(), "inlet listening on {scheme}://{addr}");
    tracing::info!("admin panel on {scheme}://{admin_addr}/admin/");
    if let Some(code) = setup_code {
        let first = FirstRun {
            panel: format!("{scheme}://{admin_addr}/admin/"),
            code,
            data,
            fresh,
            app: first_app.map(|a| (a.name, a.tenant)),
        };
        setup_banner(json_logs, &first);
    }
    let (stop, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let serving = {
        let state = state.clone();
        Box::pin(async move {
            let main = super::run(listener, state.clone(), stopped());
            let admin = async {
                match admin_listener {
                    Some(l) => super::run_site(l, state.clone(), stopped(), Site::Admin).await,
                    None => Ok(()),
                }
            };
            tokio::try_join!(main, admin).map(|_| ())
        })
    };
    Ok(Server {
        state,
        addr,
        admin_addr,
        stop,
        serving: Serving::Inline(serving),
        socket,
        ready: format!("READY=1\nSTATUS=listening on {scheme}://{addr}"),
    })
}

type Serve = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>;

enum Serving {
    Inline(Serve),
    Spawned(JoinHandle<std::io::Result<()>>),
}

impl Serving {
    async fn wait(&mut self) -> anyhow::Result<()> {
        match self {
            Serving::Inline(f) => Ok(f.await?),
            Serving::Spawned(h) => Ok(h.await??),
        }
    }
}

impl Server {
    /// Serves on a task of its own, so that the caller goes on (until [`Server::stop`]).
    pub fn spawn(mut self) -> Server {
        if let Serving::Inline(f) = self.serving {
            self.serving = Serving::Spawned(tokio::spawn(f));
        }
        self
    }

    /// Serves until SIGTERM or Ctrl-C (or until a listener fails), then stops.
    pub async fn run_until_signal(mut self) -> anyhow::Result<Arc<State>> {
        // The handlers exist before systemd hears READY: a SIGTERM sent right after it must
        // stop the server cleanly, not kill it with the signal's default action.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        crate::notify::notify(&self.ready);
        let failed = tokio::select! {
            _ = term.recv() => None,
            _ = int.recv() => None,
            r = self.serving.wait() => Some(r),
        };
        match failed {
            None => self.stop().await,
            Some(r) => {
                crate::notify::notify("STOPPING=1");
                self.finish().await;
                r?;
                Ok(self.state)
            }
        }
    }

    /// Stops serving (connections in flight finish), commits what is queued and stops the
    /// writer. Returns the state, whose last reference closes the database.
    pub async fn stop(mut self) -> anyhow::Result<Arc<State>> {
        // systemd hears it as the shutdown begins, not once the connections have drained.
        crate::notify::notify("STOPPING=1");
        // Live tails never end by themselves: the drain would wait for them.
        self.state.watch.tail.close();
        let _ = self.stop.send(true);
        let served = self.serving.wait().await;
        self.finish().await;
        served?;
        Ok(self.state)
    }

    async fn finish(&self) {
        tracing::info!("shutting down: committing what is queued");
        let _ = std::fs::remove_file(&self.socket);
        let state = self.state.clone();
        let _ = tokio::task::spawn_blocking(move || state.writer.stop()).await;
        // Cluster mode: the partitions go to other nodes at once, not after the leases' TTL.
        if let Some(c) = &self.state.ctx.cluster {
            c.leave().await;
        }
    }
}

/// What a cluster node reaches of this process: its writer and database, through a weak
/// reference (the node must not keep the state, hence the database, open).
struct NodeLocal(std::sync::Weak<State>);

impl NodeLocal {
    /// `f` on the server's state, or "shutting down" once the server is gone.
    fn on_state<F, Fut>(&self, f: F) -> crate::cluster::node::Submitted
    where
        F: FnOnce(Arc<State>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Vec<Outcome>, SubmitError>> + Send,
    {
        let state = self.0.clone();
        Box::pin(async move {
            let state = state.upgrade().ok_or(SubmitError::ShuttingDown)?;
            f(state).await
        })
    }
}

impl crate::cluster::node::Local for NodeLocal {
    fn submit(
        &self,
        sub: crate::store::writer::Submission,
        body_bytes: usize,
        replayed: Option<crate::store::writer::Replayed>,
    ) -> crate::cluster::node::Submitted {
        self.on_state(move |state| async move {
            match replayed {
                Some(r) => state.writer.submit_replayed(sub, body_bytes, r).await,
                None => state.writer.submit(sub, body_bytes).await,
            }
        })
    }

    fn submit_dry(
        &self,
        sub: crate::store::writer::Submission,
        body_bytes: usize,
    ) -> crate::cluster::node::Submitted {
        self.on_state(move |state| async move { state.writer.submit_dry(sub, body_bytes).await })
    }

    fn applied(&self, p: u32) -> Result<u64, String> {
        let state = self.0.upgrade().ok_or("the server has stopped")?;
        let db = state.store.db().map_err(|e| e.to_string())?;
        crate::cluster::node::read_applied(&db, p)
    }

    fn run(&self, job: crate::cluster::admin::AdminJob) -> crate::cluster::admin::Applied {
        let state = self.0.clone();
        Box::pin(async move {
            let state = state.upgrade().ok_or("the server has stopped")?;
            state.writer.run(job).await.map_err(|e| e.to_string())?
        })
    }

    fn privacy(&self, job: crate::cluster::node::erase::PrivacyJob) -> Result<(), String> {
        let state = self.0.upgrade().ok_or("the server has stopped")?;
        let identity = state
            .ctx
            .indexer
            .as_ref()
            .ok_or("this server keeps no identity graph")?
            .identity()
            .clone();
        tokio::task::spawn_blocking(move || job(&identity, &state.writer));
        Ok(())
    }
}

/// What the first-run banner tells.
struct FirstRun {
    /// The admin panel's URL.
    panel: String,
    code: String,
    data: PathBuf,
    /// The database was created by this start.
    fresh: bool,
    /// The first app and its tenant (`default` in a new database).
    app: Option<(String, String)>,
}

impl FirstRun {
    /// The command that mints a key for the first app.
    fn next_command(&self) -> String {
        let app = self.app.as_ref().map_or("default", |(a, _)| a.as_str());
        let data = if self.data == Path::new("./inlet-data") || self.data == Path::new("inlet-data")
        {
            String::new()
        } else {
            format!(" --data {}", self.data.display())
        };
        format!("inlet{data} keys mint --app {app} --label first")
    }

    /// What the data dir holds: what this start created, or the first app.
    fn holds(&self) -> String {
        match (&self.app, self.fresh) {
            (Some((a, t)), true) => format!(
                "created {} with tenant {t:?} and app {a:?}",
                self.data.display()
            ),
            (Some((a, t)), false) => {
                format!("{} holds tenant {t:?} and app {a:?}", self.data.display())
            }
            (None, _) => format!("{} holds no app yet", self.data.display()),
        }
    }
}

/// Says what is there and what to do next while no admin password is set: the data dir and
/// its first app, where to set the panel up (its URL with the one-time code), and the command
/// that mints a key. On stderr whatever the log level: whoever started the server needs it
/// once. With JSON logs, as one line in the log's own shape.
fn setup_banner(json: bool, first: &FirstRun) {
    let url = format!("{}#setup={}", first.panel, first.code);
    let (code, holds, next) = (&first.code, first.holds(), first.next_command());
    if json {
        let line = serde_json::json!({
            "timestamp": crate::clock::rfc3339_ms(crate::clock::now_ms()),
            "level": "INFO",
            "fields": {
                "message": "the admin panel is not set up yet: open setup_url, or enter setup_code in the panel (or run `inlet admin set-password`); then mint a key with next_command",
                "data": holds,
                "setup_url": url,
                "setup_code": code,
                "next_command": next,
            },
            "target": module_path!(),
        });
        eprintln!("{line}");
    } else {
        eprintln!(
            "\n  inlet is running: {holds}.\n  \
             1. Set up the admin panel: open\n       {url}\n     \
             or enter the one-time setup code {code} there (or run `inlet admin set-password`).\n  \
             2. Mint a key to send events with (the panel's overview can do it too):\n       \
             {next}\n"
        );
    }
}

/// Takes a backup whenever `[backup] every` has passed since the newest one in its dir
/// (at start when none is there or it is overdue), verified and rotated
/// (`ops::backup::scheduled`).
async fn backup_task(state: Arc<State>, schedule: crate::config::BackupSchedule) {
    let every_ms = schedule.every.as_millis() as u64;
    loop {
        let wait = crate::ops::backup::next_due_ms(&schedule.dir, every_ms, crate::clock::now_ms());
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let s = state.clone();
        let (dir, keep) = (schedule.dir.clone(), schedule.keep);
        let done = tokio::task::spawn_blocking(move || {
            crate::ops::backup::scheduled(&s.store, &dir, keep, crate::clock::now_ms())
        })
        .await;
        match done {
            Ok(Ok((path, summary))) => tracing::info!(
                op = "backup",
                path = %path.display(),
                events = summary.events,
                "scheduled backup written and verified"
            ),
            Ok(Err(e)) => {
                tracing::error!(op = "backup", dir = %schedule.dir.display(), error = %e, "scheduled backup failed")
            }
            Err(e) => tracing::error!(op = "backup", error = %e, "scheduled backup panicked"),
        }
        // A failure waits a full interval rather than retrying in a loop (next_due_ms would
        // say "now" again).
        if matches!(
            crate::ops::backup::next_due_ms(&schedule.dir, every_ms, crate::clock::now_ms()),
            0
        ) {
            tokio::time::sleep(schedule.every).await;
        }
    }
}

/// Runs a retention pass at start and then every `retention_interval`.
async fn retention_task(state: Arc<State>) {
    // First, erasures a crash interrupted (`privacy::resume`): finished before retention runs.
    let s = state.clone();
    let resumed = tokio::task::spawn_blocking(move || match s.ctx.indexer.as_ref() {
        Some(i) => crate::privacy::resume(i.identity(), crate::privacy::Via::Writer(&s.writer)),
        None => Ok(0),
    })
    .await;
    if let Ok(Err(e)) = resumed {
        tracing::error!(error = %e, "finishing interrupted erasures failed");
    }
    loop {
        let s = state.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let days = s.config.retention_days;
            let removed = crate::ops::retention::run_with_writer(
                &s.store,
                &s.writer,
                days,
                crate::clock::now_ms(),
            );
            if let Some(i) = s.ctx.indexer.as_ref() {
                let via = crate::privacy::Via::Writer(&s.writer);
                match crate::privacy::field_retention(i.identity(), via, crate::clock::now_ms()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "per-field retention pass"),
                    Err(e) => tracing::warn!(error = %e, "per-field retention pass failed"),
                }
            }
            removed
        })
        .await;
        match pass {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "retention pass"),
            Ok(Err(store::Error::WriterGone)) => return,
            Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed"),
            Err(e) => tracing::warn!(error = %e, "retention pass panicked"),
        }
        tokio::time::sleep(state.config.retention_interval).await;
    }
}

/// Opens the database for `serve`, creating it when new. Another server serving it is an
/// error at once; a file held by a process that does not answer on the control socket (an
/// admin command working on it directly, a server starting or stopping) is waited for, said
/// so in the log at once, for [`crate::ops::LOCK_WAIT`] at most.
fn open_waiting(data: &Path) -> anyhow::Result<Store> {
    let serving = || {
        anyhow::anyhow!(
            "another inlet server is serving {} (it answers on {}): stop it first (systemctl \
             stop inlet), or give this one another --data",
            data.display(),
            control::socket_path(data).display()
        )
    };
    if control::connect(data).is_some() {
        return Err(serving());
    }
    let deadline = Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        match Store::open(data) {
            Ok(store) => return Ok(store),
            Err(store::Error::AlreadyOpen) => {
                if control::connect(data).is_some() {
                    return Err(serving());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} is held by another process, which does not answer on {} (another \
                         inlet starting or stopping, or an admin command such as a long export \
                         or backup): waited {} s. Stop it, or give this server another --data",
                        data.join(store::DB_FILE).display(),
                        control::socket_path(data).display(),
                        LOCK_WAIT.as_secs()
                    );
                }
                if !said {
                    tracing::warn!(
                        data = %data.display(),
                        wait_secs = LOCK_WAIT.as_secs(),
                        "the database is held by another process; waiting for it"
                    );
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context(format!("opening {}", data.display())),
        }
    }
}

/// Logs a warning when the data dir is open to other users. inlet makes it 0700 when it
/// creates it and every file in it 0600, but one that already existed is the operator's
/// (it may be `.` or a shared path): said, not changed.
fn warn_if_shared(data: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(data) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                data = %data.display(),
                mode = %format!("{mode:04o}"),
                "the data dir is open to other users; `chmod 700` it (the files in it are owner-only)"
            );
        }
    }
}

/// Reads the TLS certificate and key again on each SIGHUP (`systemctl reload inlet`, a
/// certbot deploy hook). Installed without TLS too, where it only says so: SIGHUP's default
/// action would end the process.
async fn reload_on_hangup(
    mut hup: Signal,
    tls: Option<crate::config::Tls>,
    enrich: Option<crate::enrich::Enrich>,
) {
    while hup.recv().await.is_some() {
        // Enrichment's databases are read again too, changed or not.
        if let Some(e) = enrich.clone().filter(|e| e.geo().is_some()) {
            let _ = tokio::task::spawn_blocking(move || e.geo().map(|g| g.reload(true))).await;
        }
        let Some(tls) = tls.clone() else {
            tracing::info!("SIGHUP: no TLS certificate to reload");
            continue;
        };
        let cert = tls.cert.display().to_string();
        match tokio::task::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(())) => tracing::info!(cert = %cert, "TLS certificate reloaded"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "TLS reload failed; still serving the previous certificate")
            }
            Err(e) => tracing::error!(error = %e, "TLS reload panicked"),
        }
    }
}

/// Enrichment's background work: the user-agent rules compiled at start (off the request
/// path), then the geo database files checked for a change every `reload_secs`.
async fn enrich_task(enrich: crate::enrich::Enrich) {
    let warm = enrich.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(Err(e)) = warm.ua().map(|u| u.warm()) {
            tracing::error!(error = %e, "user-agent enrichment is off");
        }
    })
    .await;
    if enrich.geo().is_none() {
        return;
    }
    let mut tick = tokio::time::interval(enrich.reload_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let e = enrich.clone();
        let _ = tokio::task::spawn_blocking(move || e.geo().map(|g| g.reload(false))).await;
    }
}
