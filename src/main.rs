//! The `inlet` binary: parse the command line and hand over to the library.

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser};
use inlet::admin::AdminState;
use inlet::cli::{
    AdminCmd, AppsCmd, AuditCmd, Cli, Command, KeysCmd, RetentionCmd, SecretsCmd, ServeArgs,
    TenantsCmd,
};
use inlet::clock::parse_rfc3339_ms;
use inlet::config::{Config, LogFormat, RawConfig};
use inlet::control;
use inlet::ops::{Exec, Op, execute};
use inlet::server::{self, Site, State};
use inlet::store::{self, Store, writer::Writer};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data_is_default =
        matches.value_source("data") == Some(clap::parser::ValueSource::DefaultValue);
    match run(cli, data_is_default) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inlet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn run(mut cli: Cli, data_is_default: bool) -> anyhow::Result<()> {
    // The file layer; `--data` / `INLET_DATA` override its `data_dir`.
    let file = match &cli.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    if data_is_default && let Some(d) = &file.data_dir {
        cli.data = d.clone();
    }
    let data = cli.data.clone();
    match cli.command {
        None => serve(resolve(file, &data, &ServeArgs::parse_default())?),
        Some(Command::Serve(args)) => serve(resolve(file, &data, &args)?),
        Some(Command::CheckConfig(args)) => {
            let config = resolve(file, &data, &args)?;
            if config.data_dir.exists() && !config.data_dir.is_dir() {
                bail!("data_dir {} is not a directory", config.data_dir.display());
            }
            print!("{}", config.to_toml());
            eprintln!("inlet: configuration ok");
            Ok(())
        }
        Some(Command::Admin(AdminCmd::SetPassword)) => {
            init_logs(LogFormat::Text);
            set_password(&data)
        }
        Some(Command::Backup { file: path }) => {
            init_logs(LogFormat::Text);
            backup(&data, &path)
        }
        Some(Command::Restore { file: path }) => {
            init_logs(LogFormat::Text);
            restore(&data, &path)
        }
        Some(Command::Export(a)) if a.gzip => {
            init_logs(LogFormat::Text);
            let op = to_op(Command::Export(a), &file)?;
            let mut gz = flate2::write::GzEncoder::new(
                std::io::stdout().lock(),
                flate2::Compression::default(),
            );
            admin(&data, op, &mut gz)?;
            std::io::Write::flush(&mut gz.finish()?)?;
            Ok(())
        }
        Some(other) => {
            init_logs(LogFormat::Text);
            let op = to_op(other, &file)?;
            admin(&data, op, &mut std::io::stdout().lock())
        }
    }
}

/// Layers file, environment and flags (and the resolved data dir) into the checked config.
fn resolve(file: RawConfig, data: &Path, args: &ServeArgs) -> anyhow::Result<Config> {
    let data = RawConfig {
        data_dir: Some(data.to_owned()),
        ..RawConfig::default()
    };
    Ok(file.under(args.raw()).under(data).resolve()?)
}

fn time_arg(flag: &str, value: Option<String>) -> anyhow::Result<Option<u64>> {
    value
        .map(|v| {
            parse_rfc3339_ms(&v)
                .and_then(|ms| u64::try_from(ms).ok())
                .with_context(|| {
                    format!("{flag} {v:?}: expected RFC 3339 (2026-11-26T06:00:00Z) or a date")
                })
        })
        .transpose()
}

/// `inlet backup FILE`: written next to FILE, renamed into place when complete.
fn backup(data: &Path, path: &Path) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    // Owner-only: a backup holds key hashes and audit bodies.
    let mut file = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        0o600,
    )
    .open(&partial)
    .with_context(|| format!("creating {}", partial.display()))?;
    let written = admin(data, Op::Backup, &mut file).and_then(|()| Ok(file.sync_all()?));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, path)?;
    let bytes = std::fs::metadata(path)?.len();
    eprintln!(
        "inlet: backup written to {} ({bytes} bytes)",
        path.display()
    );
    Ok(())
}

/// `inlet restore FILE`: only with no server on the data dir.
fn restore(data: &Path, path: &Path) -> anyhow::Result<()> {
    if control::connect(data).is_some() {
        bail!(
            "a server is running on {}: stop it first (systemctl stop inlet)",
            data.display()
        );
    }
    let (kept, summary) = match store::backup::restore(data, path) {
        Err(store::Error::AlreadyOpen) => bail!(
            "the database in {} is in use by another process: stop the server first",
            data.display()
        ),
        other => other.with_context(|| format!("restoring {}", path.display()))?,
    };
    eprintln!(
        "inlet: restored {} ({} events, {} tenants, {} apps, {} keys)",
        path.display(),
        summary.events,
        summary.tenants,
        summary.apps,
        summary.keys
    );
    if let Some(kept) = kept {
        eprintln!("inlet: the previous database is kept as {}", kept.display());
    }
    Ok(())
}

trait ParseDefault {
    fn parse_default() -> Self;
}

impl ParseDefault for ServeArgs {
    /// `inlet` with no command: serve with flags' defaults and environment.
    fn parse_default() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        Only::parse_from(["inlet"]).args
    }
}

fn to_op(cmd: Command, file: &RawConfig) -> anyhow::Result<Op> {
    Ok(match cmd {
        Command::Serve(_)
        | Command::Admin(_)
        | Command::CheckConfig(_)
        | Command::Backup { .. }
        | Command::Restore { .. } => {
            unreachable!("dispatched before")
        }
        Command::Tenants(TenantsCmd::SetRetention { name, days }) => Op::TenantsSetRetention {
            name,
            days: match days.as_str() {
                "default" => None,
                d => Some(d.parse().with_context(|| {
                    format!("retention {d:?}: expected a number of days or `default`")
                })?),
            },
        },
        Command::Retention(RetentionCmd::Run { at }) => Op::RetentionRun {
            at_ms: time_arg("--at", at)?,
            default_days: file
                .clone()
                .under(ServeArgs::parse_default().raw())
                .retention_days
                .unwrap_or(0),
        },
        Command::Tenants(TenantsCmd::Add {
            name,
            monthly_quota,
        }) => Op::TenantsAdd {
            name,
            monthly_quota,
        },
        Command::Tenants(TenantsCmd::List { json }) => Op::TenantsList { json },
        Command::Tenants(TenantsCmd::SetQuota { name, quota }) => Op::TenantsSetQuota {
            name,
            monthly_quota: quota,
        },
        Command::Apps(AppsCmd::Add { name, tenant }) => Op::AppsAdd { name, tenant },
        Command::Apps(AppsCmd::List { json }) => Op::AppsList { json },
        Command::Apps(AppsCmd::Configure {
            name,
            adjust_app_token,
            appsflyer_bundle_id,
            adjust_require_token,
        }) => Op::AppsConfigure {
            name,
            adjust_app_token,
            appsflyer_bundle_id,
            adjust_require_token,
        },
        Command::Apps(AppsCmd::AdjustEvent { name, token, event }) => {
            Op::AppsAdjustEvent { name, token, event }
        }
        Command::Apps(AppsCmd::AdjustSkan {
            name,
            events,
            revenue,
            window_hours,
            clear,
        }) => Op::AppsAdjustSkan {
            name,
            rules: if clear {
                None
            } else {
                Some(
                    inlet::skan::Rules::from_specs(&events, &revenue, window_hours)
                        .map_err(anyhow::Error::msg)?,
                )
            },
        },
        Command::Keys(KeysCmd::Mint {
            app,
            label,
            events,
            rate_limit,
        }) => Op::KeysMint {
            app,
            label,
            events: events
                .into_iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect(),
            rate_limit,
        },
        Command::Keys(KeysCmd::List { app, json }) => Op::KeysList { app, json },
        Command::Keys(KeysCmd::Revoke { id }) => Op::KeysRevoke { id },
        Command::Export(a) => Op::Export {
            app: a.app,
            after: a.after,
            limit: a.limit,
            since_ms: time_arg("--since", a.since)?,
            until_ms: time_arg("--until", a.until)?,
            source: a.source,
            event: a.event,
        },
        Command::Audit(AuditCmd::Get { audit_key }) => Op::AuditGet { key: audit_key },
        Command::Secrets(SecretsCmd::Mint { app, label }) => Op::SecretsMint { app, label },
        Command::Secrets(SecretsCmd::List { app, json }) => Op::SecretsList { app, json },
        Command::Secrets(SecretsCmd::Revoke { id }) => Op::SecretsRevoke { id },
        Command::Secrets(SecretsCmd::Rotate { id, grace }) => Op::SecretsRotate {
            id,
            grace_ms: grace,
        },
        Command::Profile(a) => Op::Profile {
            app: a.app,
            id: a.id,
            kind: a.kind,
            limit: a.limit,
            json: a.json,
        },
    })
}

/// How long a command waits for the database held by a server that is starting or stopping.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Runs an admin command through a running server, or on the database directly.
fn admin(data: &Path, op: Op, stdout: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if let Some(conn) = control::connect(data) {
            return control::call(conn, &op, stdout).map_err(anyhow::Error::msg);
        }
        match Store::open(data) {
            Ok(store) => return Ok(execute(&Exec::Direct(&store), op, stdout)?),
            Err(store::Error::AlreadyOpen) if Instant::now() < deadline => {
                // A server holds the file but its socket is not up yet (or is going away).
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(store::Error::AlreadyOpen) => bail!(
                "the database in {} is held by another process that does not answer on {}",
                data.display(),
                control::socket_path(data).display()
            ),
            Err(e) => return Err(e).context(format!("opening {}", data.display())),
        }
    }
}

fn open_waiting(data: &Path) -> anyhow::Result<Store> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match Store::open(data) {
            Ok(store) => return Ok(store),
            // An admin command may hold the file for a moment.
            Err(store::Error::AlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(store::Error::AlreadyOpen) => {
                bail!("{} is in use by another inlet process", data.display())
            }
            Err(e) => return Err(e).context(format!("opening {}", data.display())),
        }
    }
}

/// glibc gives each thread that allocates its own arena (up to 8 per core), and memory freed
/// in one arena is not reused by another: with the tokio workers and the writer handing
/// buffers to each other, that cost ~16 MiB of RSS at 3M events. Two arenas are enough for
/// two busy threads (measured: no throughput change).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(config.log_format);
    let data = config.data_dir.clone();
    let store = open_waiting(&data)?;
    let (admin, setup_code) = AdminState::new(&store, config.admin.clone())?;
    let writer = Writer::start_store(&store, config.queue_bytes)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = match config.admin.listen {
        Some(a) => Some(
            runtime
                .block_on(tokio::net::TcpListener::bind(a))
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
    let state = Arc::new(State {
        config,
        store,
        writer,
        counters: Default::default(),
        rate_limiter: Default::default(),
        admin,
    });
    let socket = control::serve(&data, state.clone()).context("binding the control socket")?;
    runtime.spawn(retention_task(state.clone()));
    tracing::info!(data = %data.display(), "inlet listening on {scheme}://{addr}");
    tracing::info!("admin panel on {scheme}://{admin_addr}/admin/");
    if let Some(code) = setup_code {
        // On stderr whatever the log level: whoever started the server needs it once.
        eprintln!(
            "\n  The admin panel is not set up yet. Open\n    {scheme}://{admin_addr}/admin/#setup={code}\n  \
             or enter the one-time setup code {code} there (or run `inlet admin set-password`).\n"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    inlet::notify::notify(&format!("READY=1\nSTATUS=listening on {scheme}://{addr}"));
    runtime.block_on(async {
        let main = server::run(listener, state.clone(), stopped());
        let admin = async {
            match admin_listener {
                Some(l) => server::run_site(l, state.clone(), stopped(), Site::Admin).await,
                None => Ok(()),
            }
        };
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        tokio::try_join!(main, admin).map(|_| ())
    })?;
    inlet::notify::notify("STOPPING=1");
    tracing::info!("shutting down: committing what is queued");
    let _ = std::fs::remove_file(socket);
    state.writer.stop();
    runtime.shutdown_timeout(Duration::from_secs(5));
    // Close the database, so that the next start finds it closed cleanly instead of running
    // redb's repair (seconds per GB): the runtime's tasks are gone, and the control socket
    // only holds a weak reference.
    match Arc::try_unwrap(state) {
        Ok(state) => drop(state),
        Err(_) => tracing::warn!("database still referenced at exit; the next start repairs it"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// `inlet admin set-password`: reads the password from stdin, hashes it here, and stores the
/// hash (through a running server or directly).
fn set_password(data: &Path) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty").arg(arg).status();
    };
    if tty {
        eprint!("New admin password: ");
        stty("-echo");
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read.context("reading the password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    inlet::auth::password::check_new(password).map_err(anyhow::Error::msg)?;
    let hash = inlet::auth::password::PasswordHash::new(password);
    admin(
        data,
        Op::AdminSetPassword { hash },
        &mut std::io::stdout().lock(),
    )
}

/// Runs a retention pass at start and then every `retention_interval`.
async fn retention_task(state: Arc<State>) {
    loop {
        let s = state.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let days = s.config.retention_days;
            store::retention::run_with_writer(&s.store, &s.writer, days, inlet::clock::now_ms())
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
