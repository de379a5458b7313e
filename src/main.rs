//! The `inlet` binary: parse the command line and hand over to the library.

use anyhow::{Context, bail};
use clap::Parser;
use inlet::admin::AdminState;
use inlet::cli::{AdminCmd, AppsCmd, AuditCmd, Cli, Command, KeysCmd, ServeArgs, TenantsCmd};
use inlet::config::{Config, Limits};
use inlet::control;
use inlet::ops::{Exec, Op, execute};
use inlet::server::{self, Site, State};
use inlet::store::{self, Store, writer::Writer};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        None => serve(&cli.data, ServeArgs::parse_default()),
        Some(Command::Serve(args)) => serve(&cli.data, args),
        Some(Command::Admin(AdminCmd::SetPassword)) => set_password(&cli.data),
        Some(other) => admin(&cli.data, to_op(other)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inlet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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

fn to_op(cmd: Command) -> Op {
    match cmd {
        Command::Serve(_) | Command::Admin(_) => unreachable!("dispatched before"),
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
        },
        Command::Audit(AuditCmd::Get { audit_key }) => Op::AuditGet { key: audit_key },
    }
}

/// How long a command waits for the database held by a server that is starting or stopping.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Runs an admin command through a running server, or on the database directly.
fn admin(data: &Path, op: Op) -> anyhow::Result<()> {
    let stdout = &mut std::io::stdout().lock();
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

fn serve(data: &Path, args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::new(data.to_owned(), args.listen);
    config.limits = Limits {
        single_body: args.max_body_single,
        bulk_body: args.max_body_bulk,
    };
    config.default_rate_limit = args.default_rate_limit;
    config.admin.listen = args.admin_listen;
    config.admin.secure_cookie = args.admin_secure_cookie;
    let store = open_waiting(data)?;
    let (admin, setup_code) = AdminState::new(&store, config.admin.clone())?;
    let writer = Writer::start(store.db().clone(), config.queue_bytes)?;
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
    let state = Arc::new(State {
        config,
        store,
        writer,
        counters: Default::default(),
        rate_limiter: Default::default(),
        admin,
    });
    let socket = control::serve(data, state.clone()).context("binding the control socket")?;
    tracing::info!(data = %data.display(), "inlet listening on http://{addr}");
    tracing::info!("admin panel on http://{admin_addr}/admin/");
    if let Some(code) = setup_code {
        // On stderr whatever the log level: whoever started the server needs it once.
        eprintln!(
            "\n  The admin panel is not set up yet. Open\n    http://{admin_addr}/admin/#setup={code}\n  \
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
    tracing::info!("shutting down: committing what is queued");
    let _ = std::fs::remove_file(socket);
    state.writer.stop();
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
    admin(data, Op::AdminSetPassword { hash })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
