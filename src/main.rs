//! The `inlet` binary: parse the command line and hand over to the library.

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser};
use inlet::cli::{
    AdminCmd, AppsCmd, AuditCmd, Cli, ClusterCmd, Command, DropRulesCmd, ErasuresCmd, ExportArgs,
    KeysCmd, QuarantineCmd, RetentionCmd, SecretsCmd, ServeArgs, TenantsCmd,
};
use inlet::clock::parse_rfc3339_ms;
use inlet::config::{Config, DEFAULT_CONFIG_FILE, LogFormat, RawConfig};
use inlet::identity::Identity;
use inlet::ops::{Exec, Op, QuarantineAction, execute};
use inlet::server;
use inlet::server::control;
use inlet::store::{self, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> std::process::ExitCode {
    tune_malloc();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let data_from = match matches.value_source("data") {
        Some(clap::parser::ValueSource::CommandLine) => DataFrom::Flag,
        Some(clap::parser::ValueSource::EnvVariable) => DataFrom::Env,
        _ => DataFrom::Default,
    };
    match run(cli, data_from) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is::<Logged>() => std::process::ExitCode::FAILURE,
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
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Where the data dir's path came from, for the messages of a command that finds none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataFrom {
    Flag,
    Env,
    ConfigFile,
    Default,
}

/// The data dir a command works on, and how it was chosen.
struct Place {
    data: PathBuf,
    from: DataFrom,
    /// The configuration file read, if any.
    config: Option<PathBuf>,
}

/// The configuration file every command reads (as the service does): `--config` /
/// `INLET_CONFIG` when given, else the packaged one when present. `INLET_DEFAULT_CONFIG`
/// moves the packaged one's path (tests; a relocated install).
fn config_file(named: Option<PathBuf>) -> Option<PathBuf> {
    named.or_else(|| {
        let default = std::env::var_os("INLET_DEFAULT_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        default.exists().then_some(default)
    })
}

fn run(mut cli: Cli, mut data_from: DataFrom) -> anyhow::Result<()> {
    // The file layer; `--data` / `INLET_DATA` override its `data_dir`.
    let config = config_file(cli.config.take());
    let file = match &config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    if data_from == DataFrom::Default
        && let Some(d) = &file.data_dir
    {
        cli.data = d.clone();
        data_from = DataFrom::ConfigFile;
    }
    let place = Place {
        data: cli.data.clone(),
        from: data_from,
        config: config.clone(),
    };
    let data = cli.data.clone();
    match cli.command {
        None => serve(resolve(file, &data, &ServeArgs::parse_default())?),
        Some(Command::Serve(args)) => serve(resolve(file, &data, &args)?),
        Some(Command::CheckConfig(args)) => {
            let effective = resolve(file, &data, &args)?;
            if effective.data_dir.exists() && !effective.data_dir.is_dir() {
                bail!(
                    "data_dir {} is not a directory",
                    effective.data_dir.display()
                );
            }
            print!("{}", effective.to_toml());
            match &config {
                Some(path) => eprintln!("inlet: configuration ok (file {})", path.display()),
                None => eprintln!("inlet: configuration ok (no configuration file)"),
            }
            Ok(())
        }
        Some(Command::Init) => {
            init_logs(LogFormat::Text);
            init(&place)
        }
        Some(Command::Cluster(cmd)) => {
            init_logs(LogFormat::Text);
            cluster(cmd, file, &data)
        }
        Some(Command::Admin(AdminCmd::SetPassword { name })) => {
            init_logs(LogFormat::Text);
            set_password(&place, name)
        }
        Some(Command::Admin(AdminCmd::Invite { name, url })) => {
            init_logs(LogFormat::Text);
            let base_url = match url {
                Some(u) => u.trim_end_matches('/').to_owned(),
                None => panel_origin(resolve(file, &data, &ServeArgs::parse_default())?),
            };
            let op = Op::AdminInvite { name, base_url };
            admin(&place, op, &mut std::io::stdout().lock())
        }
        Some(Command::Backup { file: path, force }) => {
            init_logs(LogFormat::Text);
            backup(&place, &path, force)
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
            admin(&place, op, &mut gz)?;
            std::io::Write::flush(&mut gz.finish()?)?;
            Ok(())
        }
        Some(other) => {
            init_logs(LogFormat::Text);
            let op = to_op(other, &file)?;
            admin(&place, op, &mut std::io::stdout().lock())
        }
    }
}

/// `inlet init`: creates the data dir (0700) and a new database, and says what it made.
fn init(place: &Place) -> anyhow::Result<()> {
    let data = &place.data;
    let db = data.join(store::DB_FILE);
    if db.exists() {
        bail!(
            "{} already holds an inlet database: nothing to do",
            data.display()
        );
    }
    if data.exists() && !data.is_dir() {
        bail!("{} exists and is not a directory", data.display());
    }
    let new_dir = !data.exists();
    match Store::open(data) {
        Ok(store) => drop(Identity::open(&store)),
        Err(store::Error::AlreadyOpen) => {
            bail!("{} is held by another process", db.display())
        }
        Err(e) => return Err(e).context(format!("creating a database in {}", data.display())),
    }
    if new_dir {
        println!("created data dir {} (mode 0700)", data.display());
    }
    println!(
        "created database {} (mode 0600) with tenant `default` and app `default`",
        db.display()
    );
    eprintln!(
        "inlet: next: `inlet --data {d} serve`, and `inlet --data {d} keys mint --app default --label NAME`",
        d = data.display()
    );
    Ok(())
}

/// `inlet cluster check|status`: the engine as this node's settings reach it.
fn cluster(cmd: ClusterCmd, file: RawConfig, data: &Path) -> anyhow::Result<()> {
    let (args, json) = match &cmd {
        ClusterCmd::Check(args) => (args, false),
        ClusterCmd::Status { json, args } => (args, *json),
    };
    let config = resolve(file, data, args)?;
    let Some(settings) = config.cluster else {
        bail!("cluster mode is not configured: set cluster_engine and cluster_monitor");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime
        .block_on(inlet::cluster::engine::status(
            &settings,
            config.limits.bulk_body,
        ))
        .map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    if matches!(cmd, ClusterCmd::Check(_)) {
        println!(
            "engine ok: {} node(s), nats-server {}, fsync before ack; stream replicated {} times; {} partitions",
            status.engine.len(),
            status
                .engine
                .first()
                .map(|n| n.version.as_str())
                .unwrap_or("?"),
            status.stream_replicas,
            status.partitions
        );
        return Ok(());
    }
    println!("node {}", status.node);
    for n in &status.engine {
        println!(
            "engine {} ({}): nats-server {}, sync_always {}, meta leader {}",
            n.name,
            n.monitor,
            n.version,
            n.sync_always,
            n.meta_leader.as_deref().unwrap_or("none")
        );
    }
    println!(
        "stream {}: {} replicas, leader {}, {} batches",
        inlet::cluster::engine::STREAM,
        status.stream_replicas,
        status.stream_leader.as_deref().unwrap_or("none"),
        status.stream_messages
    );
    println!(
        "stream {}: {} admin changes",
        inlet::cluster::admin::STREAM,
        status.admin_records
    );
    for (p, owner) in status.owners.iter().enumerate() {
        println!("partition {p}: {}", owner.as_deref().unwrap_or("unowned"));
    }
    for n in &status.nodes {
        println!(
            "inlet node {}: admin applied {}, admin lag {}",
            n.name, n.admin_applied, n.admin_lag
        );
    }
    Ok(())
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

/// `inlet backup FILE [--force]`: written to a temporary file next to FILE (owner-only),
/// renamed into place when complete.
fn backup(place: &Place, path: &Path, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let target = backup_target(&place.data, path, force)?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let partial = Partial(dir.join(format!(".{name}.{}.partial", std::process::id())));
    // Owner-only whatever the umask: a backup holds key hashes and audit bodies. New, so
    // that no earlier file's mode or owner carries over.
    let _ = std::fs::remove_file(&partial.0);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial.0)
        .with_context(|| format!("creating {}", partial.0.display()))?;
    admin(place, Op::Backup, &mut file)?;
    file.sync_all()?;
    drop(file);
    // Checked before it gets its name: a file named as a backup is one that restores.
    let summary = inlet::ops::backup::verify(&partial.0)
        .with_context(|| format!("checking the backup {}", partial.0.display()))?;
    std::fs::rename(&partial.0, &target)?;
    std::fs::File::open(dir)?.sync_all()?;
    let bytes = std::fs::metadata(&target)?.len();
    eprintln!(
        "inlet: backup written to {} ({bytes} bytes, {} events) and verified",
        target.display(),
        summary.events
    );
    Ok(())
}

/// A backup's temporary file, removed unless it was renamed into place.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks where a backup may go and returns that path (its directory resolved): never inside
/// the data dir (by path with symlinks resolved, or by the directory's device and inode, as
/// through a bind mount), never onto a file of it (a hard link), and never over an existing
/// file without `--force`. A backup renamed over the live database replaces it under the
/// running server, which goes on writing acknowledged events into the unlinked file.
fn backup_target(data: &Path, path: &Path, force: bool) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let same =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent)
        .with_context(|| format!("the directory of {}", path.display()))?;
    let target = dir.join(name);
    // A data dir that does not exist holds nothing to protect (and the backup then fails
    // for want of a database).
    if let Ok(data_dir) = std::fs::canonicalize(data) {
        let data_meta = std::fs::metadata(&data_dir)?;
        // A symlink at the target is followed: renaming over it would not touch what it
        // points at, but an operator who named it meant that file.
        let resolved = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
        let inside = [&target, &resolved].iter().any(|p| {
            p.starts_with(&data_dir)
                || p.ancestors()
                    .any(|a| std::fs::metadata(a).is_ok_and(|m| same(&m, &data_meta)))
        });
        if inside {
            bail!(
                "refusing to write a backup inside the data dir {}: it would replace or sit \
                 beside the live database. Write it outside the data dir (ideally on other \
                 storage), e.g. `inlet backup /var/backups/inlet-$(date +%F).redb`",
                data_dir.display()
            );
        }
        if let Ok(t) = std::fs::metadata(&target) {
            for entry in std::fs::read_dir(&data_dir)?.flatten() {
                if entry.metadata().is_ok_and(|m| same(&m, &t)) {
                    bail!(
                        "refusing to write a backup onto {}: it is the same file as {} (a hard \
                         link into the data dir)",
                        path.display(),
                        entry.path().display()
                    );
                }
            }
        }
    }
    match std::fs::metadata(&target) {
        Ok(m) if m.is_dir() => bail!("{} is a directory: name a file", path.display()),
        Ok(_) if !force => bail!(
            "{} already exists: refusing to overwrite it (pass --force to replace it)",
            path.display()
        ),
        _ => Ok(target),
    }
}

/// `inlet restore FILE`: only with no server on the data dir.
fn restore(data: &Path, path: &Path) -> anyhow::Result<()> {
    if control::connect(data).is_some() {
        bail!(
            "a server is running on {}: stop it first (systemctl stop inlet)",
            data.display()
        );
    }
    let inlet::ops::backup::Restored {
        kept,
        summary,
        reapplied,
    } = match inlet::ops::backup::restore(data, path) {
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
    if reapplied > 0 {
        eprintln!("inlet: {reapplied} erasures made since the backup were applied again");
    }
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
        | Command::Cluster(_)
        | Command::Admin(AdminCmd::SetPassword { .. } | AdminCmd::Invite { .. })
        | Command::CheckConfig(_)
        | Command::Init
        | Command::Backup { .. }
        | Command::Restore { .. } => {
            unreachable!("dispatched before")
        }
        Command::Admin(AdminCmd::Remove { name }) => Op::AdminRemove { name },
        Command::Admin(AdminCmd::ResetTotp { name }) => Op::AdminResetTotp { name },
        Command::Admin(AdminCmd::List) => Op::AdminList,
        Command::Admin(AdminCmd::Audit { limit, json }) => Op::AdminAudit { limit, json },
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
        Command::Apps(AppsCmd::StoreLess {
            name,
            ip,
            user_agent,
            fields_days,
        }) => Op::AppsStoreLess {
            name,
            policy: serde_json::from_value(serde_json::json!({
                "ip": ip, "drop_user_agent": user_agent == "drop", "fields_days": fields_days,
            }))?,
        },
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
        Command::Apps(AppsCmd::BusinessKey { name, state }) => Op::AppsBusinessKey {
            name,
            on: state == "on",
        },
        Command::Apps(AppsCmd::DropRules(cmd)) => match cmd {
            DropRulesCmd::List { name, json } => Op::AppsRules { name, json },
            DropRulesCmd::Add {
                name,
                event,
                source,
                key_id,
            } => Op::AppsDropRuleAdd {
                name,
                rule: inlet::store::bizkey::NewDropRule {
                    event,
                    source,
                    key_id,
                },
            },
            DropRulesCmd::Remove { name, id } => Op::AppsDropRuleRemove { name, id },
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
        Command::Keys(KeysCmd::Allow { id, events }) => Op::KeysAllow { id, events },
        Command::Export(ExportArgs {
            app: Some(app),
            id: Some(id),
            ..
        }) => {
            let (kind, value) = kind_value(&id)?;
            Op::ExportSubject { app, kind, value }
        }
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
        Command::Quarantine(q) => {
            let (action, pick, json) = match q {
                QuarantineCmd::List { pick, json } => (QuarantineAction::List, pick, json),
                QuarantineCmd::Replay { pick, json } => (QuarantineAction::Replay, pick, json),
                QuarantineCmd::Drop { pick } => (QuarantineAction::Drop, pick, false),
            };
            Op::Quarantine {
                action,
                app: pick.app,
                reason: pick.reason,
                ids: pick.ids,
                json,
            }
        }
        Command::Receipt {
            app,
            event_id,
            json,
        } => Op::Receipt {
            app,
            event_id,
            json,
        },
        Command::Erase(a) => {
            let (kind, value) = kind_value(&a.id)?;
            Op::Erase {
                app: a.app,
                kind,
                value,
                suppress: a.suppress,
            }
        }
        Command::Erasures(ErasuresCmd::List { json }) => Op::ErasuresList { json },
        Command::Alerts(cmd) => alerts_op(cmd, file)?,
        Command::Erasures(ErasuresCmd::Unsuppress { erasure_id }) => {
            Op::ErasuresUnsuppress { id: erasure_id }
        }
        Command::Profile(a) => Op::Profile {
            app: a.app,
            id: a.id,
            kind: a.kind,
            limit: a.limit,
            json: a.json,
        },
    })
}

/// `KIND=VALUE` of `--id`.
fn kind_value(id: &str) -> anyhow::Result<(String, String)> {
    id.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .with_context(|| format!("--id {id:?}: expected KIND=VALUE"))
}

use inlet::ops::LOCK_WAIT;

/// Runs an admin command through a running server, or on the existing database directly.
fn admin(place: &Place, op: Op, stdout: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let data = &place.data;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if let Some(conn) = control::connect(data) {
            return control::call(conn, &op, stdout).map_err(anyhow::Error::msg);
        }
        match Store::open_existing(data) {
            Ok(store) => {
                // The graph's file is opened with the log, as a server does (and closed first).
                let identity = Identity::open(&store);
                return Ok(execute(&Exec::Direct(&store, &identity), op, stdout)?);
            }
            Err(store::Error::AlreadyOpen) if Instant::now() < deadline => {
                // A server holds the file but its socket is not up yet (or is going away).
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(store::Error::AlreadyOpen) => bail!(
                "the database in {} is held by another process that does not answer on {}",
                data.display(),
                control::socket_path(data).display()
            ),
            Err(store::Error::NoDatabase(_)) => return Err(no_database(place)),
            Err(store::Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                bail!("{e}: run the command as the service's user (sudo -u inlet inlet ...)")
            }
            Err(e) => return Err(e).context(format!("opening {}", data.display())),
        }
    }
}

/// What a command says when it finds no database: where it looked, why there, and how to
/// point it at the right one (a new database is made only by `serve` and `init`).
fn no_database(place: &Place) -> anyhow::Error {
    let data = place.data.display();
    let why = match (place.from, &place.config) {
        (DataFrom::Flag, _) => "given by --data".to_owned(),
        (DataFrom::Env, _) => "given by INLET_DATA".to_owned(),
        (DataFrom::ConfigFile, Some(c)) => format!("data_dir of {}", c.display()),
        (_, Some(c)) => format!("the default; {} names no data_dir", c.display()),
        (_, None) => format!(
            "the default; no configuration file was read: none named by --config or \
             INLET_CONFIG, and no {DEFAULT_CONFIG_FILE}"
        ),
    };
    anyhow::anyhow!(
        "no inlet database in {data} ({why}): looked for {data}/{} and for a server answering on \
         {}. Name the data dir the service uses with --data DIR, INLET_DATA or data_dir in the \
         configuration file; `inlet init` creates a new database",
        store::DB_FILE,
        control::socket_path(&place.data).display()
    )
}

/// Three settings of glibc's malloc, made before any other thread exists:
/// - at most two arenas: glibc gives each thread that allocates its own (up to 8 per core),
///   memory freed in one is not reused by another, and the tokio workers and the writer hand
///   buffers to each other. Two are enough for two busy threads, at no cost in throughput;
/// - blocks of 1 MiB and more always come from mmap, and go back to the system when freed.
///   By default glibc raises that threshold to the size of every mmapped block freed (up to
///   32 MiB), so after the first large buffer went, the next ones (an indexer chunk's keys, a
///   batch's records, a sorted freeze) land in the heap between small long-lived blocks and
///   their memory stays there (docs/design/memory.md has the A/B). Bulk request bodies
///   (about 400 KB) stay below it: a lower threshold cost server CPU, likely mapping each;
/// - the heap's free top is handed back past 2 MiB (twice that threshold, as glibc's own
///   adjustment keeps it). Fixing the mmap threshold leaves this one at 128 KiB, and the
///   writer's commits then shrank and regrew the heap hundreds of times a second, each
///   regrown page faulted in afresh (more CPU per single event on a grown log).
///   The indexer still hands back all free memory every few seconds (`malloc_trim`).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
    }
}

/// The error that ended `serve`, already in the log (a JSON log stays JSON to its end).
#[derive(Debug)]
struct Logged;

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("logged")
    }
}

impl std::error::Error for Logged {}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logs(config.log_format);
    let json = config.log_format == LogFormat::Json;
    serve_logged(config).map_err(|e| {
        if !json {
            return e;
        }
        tracing::error!(error = %format!("{e:#}"), "inlet stopped");
        Logged.into()
    })
}

fn serve_logged(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let state = runtime.block_on(async {
        let server = server::start(config).await?;
        server.run_until_signal().await
    })?;
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

/// The admin panel's origin as the configuration serves it (an unspecified address is
/// shown as this host's loopback address: pass `--url` for the name users reach).
fn panel_origin(config: Config) -> String {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut addr = config.admin.listen.unwrap_or(config.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("{scheme}://{addr}")
}

/// `inlet admin set-password`: reads the password from stdin, hashes it here, and stores the
/// hash (through a running server or directly).
fn set_password(place: &Place, name: Option<String>) -> anyhow::Result<()> {
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
        place,
        Op::AdminSetPassword { hash, name },
        &mut std::io::stdout().lock(),
    )
}

/// `inlet alerts ...` as an admin command.
fn alerts_op(cmd: inlet::cli::AlertsCmd, file: &RawConfig) -> anyhow::Result<Op> {
    use inlet::cli::AlertsCmd;
    use inlet::watch::alerts::{Condition, NewRule};
    Ok(match cmd {
        AlertsCmd::List { json } => Op::AlertsList { json },
        AlertsCmd::Remove { id } => Op::AlertsRemove { id },
        AlertsCmd::Test { id } => Op::AlertsTest {
            id,
            webhook_ca: file.alerts.as_ref().and_then(|a| a.webhook_ca.clone()),
        },
        AlertsCmd::Add(a) => {
            let condition = match (a.silent_for, a.rejected_above, a.quota_above) {
                (Some(d), None, None) => Condition::Silence {
                    secs: inlet::auth::secrets::parse_duration_ms(&d)
                        .map(|ms| ms / 1000)
                        .with_context(|| format!("--silent-for {d:?}: not a duration like 30m"))?,
                },
                (None, Some(pct), None) => Condition::Rejections {
                    pct,
                    window_minutes: a.window_minutes,
                    min_events: a.min_events,
                },
                (None, None, Some(pct)) => Condition::Quota { pct },
                _ => bail!("give exactly one of --silent-for, --rejected-above, --quota-above"),
            };
            Op::AlertsAdd {
                rule: NewRule {
                    app: a.app,
                    key: a.key,
                    condition,
                    webhook: a.webhook,
                },
            }
        }
    })
}
