//! `inlet-bench`: the load generator, the two ceilings and the whole benchmark table
//! (BENCHMARKS.md). Build with `cargo build --release --bins`, then
//! `target/release/inlet-bench all`.

mod ceiling;
mod cpu;
mod curve;
mod decode;
mod load;
mod postgres;
mod suite;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "inlet-bench",
    about = "Load generator and benchmark suite for inlet"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Drive a running inlet (or any server) over HTTP and report throughput and latency.
    Load {
        /// Server address, e.g. 127.0.0.1:8080.
        #[arg(long)]
        addr: SocketAddr,
        /// A server key (`srv_...`).
        #[arg(long, env = "INLET_BENCH_KEY")]
        key: String,
        /// Events per request: 1 = POST /s2s/event, more = POST /s2s/events/bulk.
        #[arg(long, default_value_t = 1)]
        bulk: usize,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Stop after this many requests.
        #[arg(long)]
        requests: Option<u64>,
        /// Stop after this many seconds (default 10 when --requests is not given).
        #[arg(long)]
        seconds: Option<f64>,
        /// Share of events (0..1) that resubmit an id sent before in this run.
        #[arg(long, default_value_t = 0.0)]
        dup_share: f64,
        /// With --dup-share: resubmit ids of an earlier run instead, the first N unique ids
        /// of the id stream --dup-seed (as `all` does after its fill).
        #[arg(long, requires = "dup_seed")]
        dup_count: Option<u64>,
        #[arg(long)]
        dup_seed: Option<u64>,
        /// Open-loop rate in requests/s (latency then counts from each scheduled start).
        #[arg(long)]
        rate: Option<f64>,
        /// Seed of the id stream (runs with the same seed send the same ids).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// With --data: check that the server's stored count grew by what it acknowledged
        /// (through `inlet tenants list --json`; tenant `default`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// The inlet binary used for --data (default: next to this one).
        #[arg(long)]
        inlet: Option<PathBuf>,
    },
    /// A bare hyper server that reads each body and answers 200: the HTTP ceiling.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The bare server with a durable group commit behind it (no auth, parsing or index):
    /// the floor of any durable single-event server on this machine.
    DurableServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, value_enum, default_value_t = ceiling::Commit::QuickRepair)]
        commit: ceiling::Commit,
        /// Directory for the file it appends to (the file is replaced, and left behind).
        #[arg(long)]
        dir: PathBuf,
        /// Grow the redb file to this many bytes before serving (a floor for a log of that
        /// size: a quick-repair commit costs more in a larger file). The redb modes only.
        #[arg(long, default_value_t = 0)]
        grow_to: u64,
        /// Take bulk bodies (`{"events":[…]}`) and store each event as its own row: the
        /// floor of a durable bulk server that keeps events one by one.
        #[arg(long)]
        per_event: bool,
        /// Also write, in each commit, the other tables inlet writes for single events
        /// (dedupe commit row, audit body, key use, usage, day and hour tallies). The redb
        /// modes only.
        #[arg(long)]
        like_inlet: bool,
    },
    /// Durable redb appends in commits of N: the storage ceiling, or with --index a dedupe
    /// index variant.
    Storage {
        #[arg(long, value_enum, default_value_t = ceiling::Index::None)]
        index: ceiling::Index,
        /// Events stored (untimed) before the timed part.
        #[arg(long, default_value_t = 0)]
        prefill: u64,
        /// Events in the timed part.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        commit: u64,
        /// Directory for the database file (default: a temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The request side of the native endpoints in-process (decode → validate → encode),
    /// in ns of thread CPU per event, on the bodies `load` sends.
    Decode {
        /// Events per round and endpoint.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        #[arg(long, default_value_t = 7)]
        rounds: usize,
    },
    /// Everything: ceilings, inlet scenarios, restarts, RSS; prints the BENCHMARKS.md table.
    All(suite::Args),
    /// The cost curve: bulk events/s, server CPU per event and peak RSS as one log grows
    /// (1M, 3M, 10M, 30M stored by default), with the PostgreSQL peer at 1M and 10M.
    Curve(curve::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Load {
            addr,
            key,
            bulk,
            conns,
            requests,
            seconds,
            dup_share,
            dup_count,
            dup_seed,
            rate,
            seed,
            data,
            inlet,
        } => {
            let duration = match (requests, seconds) {
                (None, None) => Some(10.0),
                (_, s) => s,
            }
            .map(Duration::from_secs_f64);
            let w = load::Workload {
                addr,
                key,
                bulk,
                conns,
                requests,
                duration,
                dup_share,
                dup_pool: dup_count
                    .zip(dup_seed)
                    .map(|(count, seed)| load::IdPool { seed, count }),
                seed,
                first_unique: 0,
                rate,
            };
            let inlet = inlet.unwrap_or_else(suite::inlet_next_to_me);
            let before = match &data {
                Some(d) => Some(suite::stored(&inlet, d)?),
                None => None,
            };
            let report = runtime()?.block_on(load::run(w));
            println!("{}", report.summary());
            if let (Some(d), Some(before)) = (&data, before) {
                let stored = suite::stored(&inlet, d)? - before;
                println!(
                    "stored {stored}, acknowledged {}: {}",
                    report.accepted,
                    if stored == report.accepted {
                        "equal"
                    } else {
                        "MISMATCH"
                    }
                );
                anyhow::ensure!(stored == report.accepted, "stored != acknowledged");
            }
        }
        Cmd::BareServer { listen } => {
            let rt = runtime()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                println!("listening on http://{}", listener.local_addr()?);
                ceiling::bare_server(listener).await
            })?;
        }
        Cmd::DurableServer {
            listen,
            commit,
            dir,
            grow_to,
            per_event,
            like_inlet,
        } => {
            // The address is printed once the file is ready: a load started then measures
            // the floor alone.
            let mut sink = ceiling::Sink::create(&dir, commit, grow_to)?;
            if like_inlet {
                sink = sink.like_inlet();
            }
            let rt = runtime()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                println!("listening on http://{}", listener.local_addr()?);
                ceiling::durable_server(listener, sink, per_event).await
            })?;
        }
        Cmd::Storage {
            index,
            prefill,
            events,
            commit,
            dir,
        } => {
            let tmp = suite::Scratch::new(&std::env::temp_dir(), "storage")?;
            let dir = dir.unwrap_or_else(|| tmp.0.clone());
            let run =
                ceiling::storage(&dir, index, prefill, events, commit).context("storage run")?;
            println!(
                "index {index:?}, {prefill} stored before, {events} events in commits of {commit}: \
                 {:.0} events/s ({:.2} s, file {} MiB)",
                run.events_per_sec(),
                run.elapsed.as_secs_f64(),
                run.file_bytes >> 20
            );
        }
        Cmd::Decode { events, rounds } => {
            println!("{}", decode::run(events, rounds).summary());
        }
        Cmd::All(args) => suite::all(&args)?,
        Cmd::Curve(args) => curve::curve(&args)?,
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
