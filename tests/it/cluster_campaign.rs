//! Cluster failure campaigns: a real 3-node NATS JetStream engine and three inlet nodes on
//! loopback, clients sending through every node and retrying on 503 or a broken connection,
//! while the campaign kills or stops engine nodes (the event stream's leader or a follower)
//! and kills partition owners.
//!
//! After every round: every id answered 2xx (accepted or duplicate) is in the engine's stream,
//! no id is stored twice, no id is answered "accepted" twice, and each tenant's counter (on
//! its partition's owner) equals its stored events; a capped tenant flooded across a failover
//! stores exactly min(cap, distinct ids).
//!
//! `INLET_CLUSTER_ROUNDS` (default: a few per campaign) and `INLET_CLUSTER_SEED` (default:
//! from the clock, printed) make it a long run; `INLET_CAMPAIGN_REPORT=FILE` appends the
//! figures to FILE; `INLET_CLUSTER_LOGS=DIR` keeps the inlet nodes' logs (the engine campaign
//! prints each fault's time, in ms since the epoch, to line them up). See RELIABILITY.md.

use crate::cluster::{Cluster, Node, PARTITIONS, post, runtime, settings};
use crate::crash::{Rng, env_u64};
use crate::engine::Engine;
use crate::support::{DEADLINE, wait_for};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// (tenant, event id).
type Key = (String, String);
/// One request's answer: its tenant and each id's outcome.
type Answer = (String, Vec<(String, String)>);

fn rounds(default: u64) -> u64 {
    env_u64("INLET_CLUSTER_ROUNDS", default)
}

fn seed() -> u64 {
    env_u64(
        "INLET_CLUSTER_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    )
}

/// A tenant of the campaign's cluster.
#[derive(Clone)]
struct Tenant {
    name: String,
    partition: u32,
    key: String,
    cap: Option<u64>,
}

/// The events in the engine's stream, read on from where the last read stopped (the stream
/// only grows).
#[derive(Default)]
struct StreamLog {
    next: u64,
    stored: HashMap<Key, usize>,
}

impl StreamLog {
    /// Reads the batches appended since the last call; panics on an event stored twice. The
    /// engine may still be settling after a fault (a stream leader stepping down after
    /// SIGCONT answers "temporarily unavailable"): a failed read is tried again for a while.
    fn catch_up(&mut self, engine: &Engine) {
        let (next, stored) = (&mut self.next, &mut self.stored);
        runtime().block_on(async {
            let end = Instant::now() + DEADLINE * 2;
            let retry = |what: String| {
                assert!(Instant::now() < end, "reading the stream: {what}");
                tokio::time::sleep(Duration::from_millis(200))
            };
            let s = settings(engine, "reader", PARTITIONS);
            let e = inlet::cluster::engine::connect(&s).await.unwrap();
            let (stream, last) = loop {
                match e.js.get_stream(inlet::cluster::engine::STREAM).await {
                    Ok(mut stream) => match stream.info().await {
                        Ok(info) => {
                            let last = info.state.last_sequence;
                            break (stream, last);
                        }
                        Err(err) => retry(err.to_string()).await,
                    },
                    Err(err) => retry(err.to_string()).await,
                }
            };
            *next = (*next).max(1);
            while *next <= last {
                let m = match stream
                    .raw_message_builder()
                    .sequence(*next)
                    .next_by_subject("inlet.events.>")
                    .send()
                    .await
                {
                    Ok(m) => m,
                    Err(err) => {
                        retry(format!("seq {next} of {last}: {err}")).await;
                        continue;
                    }
                };
                for sub in inlet::cluster::wire::decode_batch(&m.payload).unwrap() {
                    for ev in &sub.events {
                        let rec = inlet::store::codec::decode_event(ev.record()).unwrap();
                        let n = stored
                            .entry((rec.tenant.clone(), ev.event_id().to_owned()))
                            .or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "{}/{} stored twice", rec.tenant, ev.event_id());
                    }
                }
                *next = m.sequence + 1;
            }
        });
    }

    fn of(&self, tenant: &str) -> u64 {
        self.stored.keys().filter(|(t, _)| t == tenant).count() as u64
    }
}

/// One campaign's cluster and what it saw.
struct World {
    engine: Engine,
    cluster: Cluster,
    tenants: Vec<Tenant>,
    log: StreamLog,
    /// Every id answered "accepted", and how often.
    accepted: HashMap<Key, usize>,
    /// Every id answered 2xx (accepted or duplicate).
    acked: HashSet<Key>,
    requests: Arc<AtomicU64>,
    rounds: u64,
    failovers: u64,
    /// Kill or stop → first 2xx for the partition through another node.
    failover_times: Vec<Duration>,
    started: Instant,
}

impl World {
    /// Three inlet nodes sharing (through the engine) the admin data of a template data dir
    /// that holds uncapped tenants `u*` (at least
    /// one per partition) and `capped` tenants `q0..` with a monthly quota of `cap`.
    fn start(capped: usize, cap: u64) -> World {
        let engine = Engine::cluster();
        let dirs = tempfile::tempdir().unwrap();
        let template = dirs.path().join("template");
        let cli = |args: &[&str]| crate::support::cli_ok(&template, args);
        cli(&["init"]);
        let mut names: Vec<(String, Option<u64>)> = Vec::new();
        let add = |name: &str, quota: u64| {
            cli(&[
                "tenants",
                "add",
                name,
                "--monthly-quota",
                &quota.to_string(),
            ]);
            let app = format!("app-{name}");
            cli(&["apps", "add", &app, "--tenant", name]);
            cli(&["keys", "mint", "--app", &app, "--label", "c"])
                .trim()
                .to_owned()
        };
        let mut keys = HashMap::new();
        let mut covered = HashSet::new();
        let ids = |cli: &dyn Fn(&[&str]) -> String| -> HashMap<String, u32> {
            crate::support::parse_ndjson(&cli(&["tenants", "list", "--json"]))
                .into_iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap().to_owned(),
                        t["id"].as_u64().unwrap() as u32,
                    )
                })
                .collect()
        };
        let mut k = 0;
        while covered.len() < PARTITIONS as usize || k < 4 {
            assert!(k < 64, "no tenant lands in some partition");
            let name = format!("u{k}");
            keys.insert(name.clone(), add(&name, 0));
            let id = ids(&cli)[&name];
            covered.insert(inlet::cluster::node::partition_of(id, PARTITIONS));
            names.push((name, None));
            k += 1;
        }
        for q in 0..capped {
            let name = format!("q{q}");
            keys.insert(name.clone(), add(&name, cap));
            names.push((name, Some(cap)));
        }
        let ids = ids(&cli);
        let tenants = names
            .into_iter()
            .map(|(name, cap)| Tenant {
                partition: inlet::cluster::node::partition_of(ids[&name], PARTITIONS),
                key: keys[&name].clone(),
                name,
                cap,
            })
            .collect();
        let mut nodes = Vec::new();
        // The first node brings the template's admin data into the new cluster's admin
        // stream; the others start empty and take it from the engine.
        for (i, name) in ["n1", "n2", "n3"].into_iter().enumerate() {
            let data = dirs.path().join(name);
            std::fs::create_dir(&data).unwrap();
            if i == 0 {
                for f in std::fs::read_dir(&template).unwrap().flatten() {
                    if f.file_type().unwrap().is_file() {
                        std::fs::copy(f.path(), data.join(f.file_name())).unwrap();
                    }
                }
            }
            nodes.push(Node::start(name, &data, &engine));
        }
        let cluster = Cluster {
            dirs,
            nodes,
            keys: Vec::new(),
        };
        cluster.wait_all_served(&[0, 1, 2]);
        World {
            engine,
            cluster,
            tenants,
            log: StreamLog::default(),
            accepted: HashMap::new(),
            acked: HashSet::new(),
            requests: Arc::new(AtomicU64::new(0)),
            rounds: 0,
            failovers: 0,
            failover_times: Vec::new(),
            started: Instant::now(),
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.cluster.nodes.iter().map(|n| n.addr).collect()
    }

    fn uncapped(&self) -> Vec<Tenant> {
        self.tenants
            .iter()
            .filter(|t| t.cap.is_none())
            .cloned()
            .collect()
    }

    /// An uncapped tenant of partition `p`.
    fn probe_tenant(&self, p: u32) -> Tenant {
        self.tenants
            .iter()
            .find(|t| t.cap.is_none() && t.partition == p)
            .cloned()
            .unwrap()
    }

    /// Kills the inlet node `n` and starts it again under its name on its data dir.
    fn restart_node(&mut self, n: usize) {
        self.cluster.nodes[n].kill();
        let (name, data) = (
            self.cluster.nodes[n].name.clone(),
            self.cluster.nodes[n].data.clone(),
        );
        self.cluster.nodes[n] = Node::start(&name, &data, &self.engine);
    }

    /// The campaign's checks after a round; `answers` are the round's.
    fn check(&mut self, answers: &[Answer]) {
        self.log.catch_up(&self.engine);
        let stored = &self.log.stored;
        let mut lost = Vec::new();
        for (t, results) in answers {
            for (id, status) in results {
                let k = (t.clone(), id.clone());
                match status.as_str() {
                    "accepted" => {
                        let n = self.accepted.entry(k.clone()).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "{t}/{id} answered accepted twice");
                    }
                    "duplicate" => {}
                    "rejected" => {
                        let capped = self.tenants.iter().any(|x| &x.name == t && x.cap.is_some());
                        assert!(capped, "{t}/{id} rejected, and {t} has no cap");
                        continue;
                    }
                    other => panic!("{t}/{id}: {other}"),
                }
                if !stored.contains_key(&k) {
                    lost.push(format!("{t}/{id} ({status})"));
                }
                self.acked.insert(k);
            }
        }
        assert!(lost.is_empty(), "answered 2xx but not stored: {lost:?}");
        // Each tenant's counter, on its partition's owner, equals its stored events. The
        // owners are read in one pass (partitions may still move as nodes rejoin).
        let mut owners: HashMap<u32, usize> = HashMap::new();
        wait_for("every partition served by one node", || {
            owners.clear();
            for n in 0..3 {
                match self.cluster.nodes[n].owned() {
                    Some(o) => owners.extend(o.into_iter().map(|p| (p, n))),
                    None => return false,
                }
            }
            owners.len() == PARTITIONS as usize
        });
        let mut used_by: HashMap<usize, HashMap<String, u64>> = HashMap::new();
        for t in &self.tenants {
            let owner = owners[&t.partition];
            let used = used_by
                .entry(owner)
                .or_insert_with(|| self.cluster.nodes[owner].used());
            let counted = used.get(&t.name).copied().unwrap_or(0);
            assert_eq!(
                counted,
                self.log.of(&t.name),
                "tenant {}: counter on {} vs stored",
                t.name,
                self.cluster.nodes[owner].name
            );
        }
        self.rounds += 1;
    }

    /// With `INLET_CLUSTER_LOGS=DIR`, writes each inlet node's log to `DIR/<campaign>-<node>.log`
    /// (to line up a round's answers with the lease loop and the appends).
    fn save_logs(&self, campaign: &str) {
        let Ok(dir) = std::env::var("INLET_CLUSTER_LOGS") else {
            return;
        };
        std::fs::create_dir_all(&dir).unwrap();
        for n in &self.cluster.nodes {
            let path = std::path::Path::new(&dir).join(format!("{campaign}-{}.log", n.name));
            std::fs::write(path, n.log.lock().unwrap().as_bytes()).unwrap();
        }
    }

    /// Prints the figures and appends them to `INLET_CAMPAIGN_REPORT`.
    fn report(&self, name: &str, seed: u64) {
        let mut times = self.failover_times.clone();
        times.sort();
        let ms = |d: Option<&Duration>| d.map_or("-".to_owned(), |d| d.as_millis().to_string());
        let line = format!(
            "cluster campaign {name}: seed {seed} rounds {} requests {} acknowledged {} stored {} lost 0 doubled 0 failovers {} failover-to-2xx-ms min/median/max {}/{}/{} in {:?}",
            self.rounds,
            self.requests.load(Ordering::Relaxed),
            self.acked.len(),
            self.log.stored.len(),
            self.failovers,
            ms(times.first()),
            ms(times.get(times.len() / 2)),
            ms(times.last()),
            self.started.elapsed()
        );
        crate::support::report_campaign(&line);
    }
}

/// Sends `ids` of a tenant until a node answers (200, or 429 over the cap), trying `addrs`
/// in turn from `start`; a 503 or a broken connection moves on to the next node.
fn send_retrying(
    addrs: &[SocketAddr],
    start: usize,
    key: &str,
    ids: &[String],
    requests: &AtomicU64,
) -> Vec<(String, String)> {
    let end = Instant::now() + DEADLINE * 3;
    let mut i = start;
    loop {
        requests.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = post(addrs[i % addrs.len()], key, ids) {
            return r;
        }
        assert!(Instant::now() < end, "no node took the batch in time");
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends single fresh events of `tenant` through `addrs` until one is answered 2xx; returns
/// the answer (its time is the failover's end).
fn probe(addrs: &[SocketAddr], tenant: &Tenant, prefix: &str, requests: &AtomicU64) -> Answer {
    let end = Instant::now() + DEADLINE * 3;
    let mut n = 0;
    loop {
        let ids = vec![format!("{prefix}-{n}")];
        n += 1;
        requests.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = post(addrs[n % addrs.len()], &tenant.key, &ids) {
            return (tenant.name.clone(), r);
        }
        assert!(
            Instant::now() < end,
            "partition {} never came back",
            tenant.partition
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Client threads sending batches of the uncapped tenants through every node until stopped;
/// each batch is retried until answered, and one in four also resends ids it had answered.
struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered 2xx so far.
    answered: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<Answer>>>,
}

impl Load {
    fn start(world: &World, clients: usize, prefix: &str, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let tenants = world.uncapped();
        let threads = (0..clients)
            .map(|c| {
                let (stop, answered) = (stop.clone(), answered.clone());
                let (addrs, tenants) = (world.addrs(), tenants.clone());
                let requests = world.requests.clone();
                let prefix = format!("{prefix}-c{c}");
                let mut rng = Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9));
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    let mut mine: Vec<Vec<String>> = vec![Vec::new(); tenants.len()];
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let t = rng.below(tenants.len() as u64) as usize;
                        let size = if rng.below(2) == 0 {
                            1
                        } else {
                            1 + rng.below(20) as usize
                        };
                        let mut ids: Vec<String> = (0..size)
                            .map(|_| {
                                n += 1;
                                format!("{prefix}-{n}")
                            })
                            .collect();
                        if rng.below(4) == 0 && !mine[t].is_empty() {
                            for _ in 0..3 {
                                let old = &mine[t][rng.below(mine[t].len() as u64) as usize];
                                if !ids.contains(old) {
                                    ids.push(old.clone());
                                }
                            }
                        }
                        let start = rng.below(addrs.len() as u64) as usize;
                        let r = send_retrying(&addrs, start, &tenants[t].key, &ids, &requests);
                        answered.fetch_add(1, Ordering::SeqCst);
                        mine[t].extend(r.iter().map(|(id, _)| id.clone()));
                        answers.push((tenants[t].name.clone(), r));
                    }
                    answers
                })
            })
            .collect();
        Load {
            stop,
            answered,
            threads,
        }
    }

    /// Waits until `more` requests beyond the current count are answered, for at most
    /// `bound`; the time it took, or `None`.
    fn progress(&self, more: u64, bound: Duration) -> Option<Duration> {
        let from = self.answered.load(Ordering::SeqCst);
        let t0 = Instant::now();
        while t0.elapsed() < bound {
            if self.answered.load(Ordering::SeqCst) >= from + more {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .flat_map(|h| h.join().expect("a client"))
            .collect()
    }
}

/// What is done to an engine node in a round.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    StopLeader,
    KillFollower,
    StopFollower,
}

/// Engine faults under load: SIGKILL or SIGSTOP of the event stream's leader or of a
/// follower while clients send through all three inlet nodes; the node comes back (restarted
/// on its store dir, or SIGCONT) and the engine heals before the round's checks.
#[test]
fn engine_leader_and_follower_kills_and_stops_lose_and_double_nothing() {
    let rounds = rounds(4);
    let seed = seed();
    eprintln!("cluster campaign engine: {rounds} rounds, INLET_CLUSTER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut world = World::start(0, 0);
    let stream = inlet::cluster::engine::STREAM;
    let faults = [
        Fault::KillLeader,
        Fault::StopLeader,
        Fault::KillFollower,
        Fault::StopFollower,
    ];
    let first = rng.below(4);
    let mut during: Vec<Duration> = Vec::new();
    let mut stalled = 0;
    for round in 0..rounds {
        // Every kind in turn, from a random first one.
        let fault = faults[((first + round) % 4) as usize];
        let load = Load::start(&world, 3, &format!("e{round}"), rng.next());
        load.progress(5, DEADLINE * 2)
            .expect("the load gets answers before the fault");
        let leader = world
            .engine
            .stream_leader(stream, None)
            .expect("the stream has a leader");
        let target = match fault {
            Fault::KillLeader | Fault::StopLeader => leader,
            Fault::KillFollower | Fault::StopFollower => {
                (leader + 1 + rng.below(2) as usize) % world.engine.nodes.len()
            }
        };
        match fault {
            Fault::KillLeader | Fault::KillFollower => world.engine.nodes[target].kill(),
            Fault::StopLeader | Fault::StopFollower => world.engine.nodes[target].signal("STOP"),
        }
        world.failovers += 1;
        let fault_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        // The load goes on without the node (a new stream leader for a leader's fault);
        // how long the first answers take is measured, not asserted: the checks are about
        // what is stored.
        let answered_again = load.progress(3, DEADLINE);
        match answered_again {
            Some(d) => during.push(d),
            None => stalled += 1,
        }
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        match fault {
            Fault::KillLeader | Fault::KillFollower => world.engine.nodes[target].restart(),
            Fault::StopLeader | Fault::StopFollower => world.engine.nodes[target].signal("CONT"),
        }
        load.progress(3, DEADLINE * 2)
            .expect("the load gets answers once the engine node is back");
        let answers = load.finish();
        world.engine.wait_streams_healthy();
        world.check(&answers);
        eprintln!(
            "cluster campaign engine: round {} {fault:?} of {} at {fault_at}, answers again after {} ms, stored {} ({:?})",
            round + 1,
            world.engine.nodes[target].name,
            answered_again.map_or("-".to_owned(), |d| d.as_millis().to_string()),
            world.log.stored.len(),
            world.started.elapsed()
        );
    }
    world.failover_times = during;
    world.save_logs("engine");
    eprintln!("cluster campaign engine: {stalled} fault(s) without a 2xx while the node was out");
    world.report("engine", seed);
    assert!(world.acked.len() as u64 > rounds * 5);
}

/// Quota floods through all three nodes while the flooded tenant's partition owner is killed
/// mid-flood (and started again): the capped tenant stores exactly min(cap, distinct ids).
#[test]
fn quota_floods_across_owner_kills_store_exactly_the_cap() {
    let rounds = rounds(2);
    let seed = seed();
    eprintln!("cluster campaign quota: {rounds} rounds, INLET_CLUSTER_SEED={seed}");
    let cap = 60;
    let mut rng = Rng::new(seed);
    let mut world = World::start(rounds as usize, cap);
    for round in 0..rounds {
        let tenant = world
            .tenants
            .iter()
            .find(|t| t.name == format!("q{round}"))
            .cloned()
            .unwrap();
        let p = tenant.partition;
        let owner = world.cluster.owner_of(&[0, 1, 2], p);
        let addrs = world.addrs();
        let answered = Arc::new(AtomicU64::new(0));
        // Three threads of overlapping ranges: 140 distinct ids against a cap of 60.
        let flood: Vec<_> = (0..3)
            .map(|n| {
                let (addrs, key, name) = (addrs.clone(), tenant.key.clone(), tenant.name.clone());
                let (requests, answered) = (world.requests.clone(), answered.clone());
                std::thread::spawn(move || {
                    let mut answers = Vec::new();
                    for b in 0..8 {
                        let from = n * 25 + b * 10;
                        let ids: Vec<String> =
                            (from..from + 20).map(|i| format!("{name}-{i}")).collect();
                        let r = send_retrying(&addrs, n + b, &key, &ids, &requests);
                        answered.fetch_add(1, Ordering::SeqCst);
                        answers.push((name.clone(), r));
                    }
                    answers
                })
            })
            .collect();
        // Mid-flood: after a random number of answered batches (0..3).
        let after = rng.below(4);
        wait_for("flood batches answered", || {
            answered.load(Ordering::SeqCst) >= after
        });
        world.cluster.nodes[owner].kill();
        let killed = Instant::now();
        world.failovers += 1;
        let others: Vec<SocketAddr> = (0..3).filter(|&n| n != owner).map(|n| addrs[n]).collect();
        let probe_tenant = world.probe_tenant(p);
        let probed = probe(
            &others,
            &probe_tenant,
            &format!("qp{round}"),
            &world.requests,
        );
        world.failover_times.push(killed.elapsed());
        let mut answers: Vec<Answer> = flood
            .into_iter()
            .flat_map(|h| h.join().expect("a flood thread"))
            .collect();
        answers.push(probed);
        // The killed node comes back under its name on its data dir.
        world.restart_node(owner);
        world.check(&answers);
        let distinct: HashSet<&str> = answers
            .iter()
            .filter(|(t, _)| *t == tenant.name)
            .flat_map(|(_, r)| r.iter().map(|(id, _)| id.as_str()))
            .collect();
        assert!(distinct.len() as u64 > cap);
        assert_eq!(
            world.log.of(&tenant.name),
            cap.min(distinct.len() as u64),
            "{}: stored vs min(cap, distinct)",
            tenant.name
        );
        eprintln!(
            "cluster campaign quota: round {} killed {} failover {:?} ({:?})",
            round + 1,
            world.cluster.nodes[owner].name,
            world.failover_times.last().unwrap(),
            world.started.elapsed()
        );
    }
    world.report("quota", seed);
}

/// The same batches to all three nodes, concurrently and then one after another, while a
/// partition's owner has just been killed (it is started again under its name at the end of
/// the round): every batch's ids are stored once, accepted at most once in all, and answered
/// duplicate everywhere afterwards, the last round's batches too (sent again on every round,
/// after the partitions changed hands).
#[test]
fn the_same_batches_to_all_nodes_across_owner_kills_are_stored_once() {
    let rounds = rounds(2);
    let seed = seed();
    eprintln!("cluster campaign same-batches: {rounds} rounds, INLET_CLUSTER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut world = World::start(0, 0);
    let mut last_round: Vec<(Tenant, Vec<String>)> = Vec::new();
    for round in 0..rounds {
        let p = rng.below(u64::from(PARTITIONS)) as u32;
        let owner = world.cluster.owner_of(&[0, 1, 2], p);
        let addrs = world.addrs();
        world.cluster.nodes[owner].kill();
        let killed = Instant::now();
        world.failovers += 1;
        let live: Vec<SocketAddr> = (0..3).filter(|&n| n != owner).map(|n| addrs[n]).collect();
        let probe_tenant = world.probe_tenant(p);
        let requests = world.requests.clone();
        let others = live.clone();
        let prober = std::thread::spawn(move || {
            let r = probe(&others, &probe_tenant, &format!("sp{round}"), &requests);
            (r, killed.elapsed())
        });
        // Concurrently: each tenant's batch to all three nodes at once (the killed one's
        // sender goes on to the next), and the last round's batches again.
        let batches: Vec<(Tenant, Vec<String>)> = world
            .uncapped()
            .into_iter()
            .map(|t| {
                let size = 1 + rng.below(30);
                let ids = (0..size)
                    .map(|i| format!("s{round}-{}-{i}", t.name))
                    .collect();
                (t, ids)
            })
            .collect();
        let mut threads = Vec::new();
        for (t, ids) in batches.iter().chain(&last_round) {
            for n in 0..3 {
                let (addrs, t, ids) = (addrs.clone(), t.clone(), ids.clone());
                let requests = world.requests.clone();
                threads.push(std::thread::spawn(move || {
                    let r = send_retrying(&addrs, n, &t.key, &ids, &requests);
                    (t.name, r)
                }));
            }
        }
        let mut answers: Vec<Answer> = threads
            .into_iter()
            .map(|h| h.join().expect("a sender"))
            .collect();
        for (t, r) in &answers[batches.len() * 3..] {
            assert!(r.iter().all(|(_, s)| s == "duplicate"), "{t}: {r:?}");
        }
        // One after another, through each live node (a 503 is retried on that node): all
        // duplicates.
        for (t, ids) in batches.iter().chain(&last_round) {
            for addr in &live {
                let r = send_retrying(&[*addr], 0, &t.key, ids, &world.requests);
                assert!(r.iter().all(|(_, s)| s == "duplicate"), "{}: {r:?}", t.name);
                answers.push((t.name.clone(), r));
            }
        }
        let (probed, took) = prober.join().expect("the prober");
        answers.push(probed);
        world.failover_times.push(took);
        // The killed node comes back under its name on its data dir; it takes its share of
        // the partitions again while the next round runs.
        world.restart_node(owner);
        world.check(&answers);
        // Every id of every batch is stored (each was answered; a 503 may have hidden the
        // one "accepted" behind "duplicate" answers, never made two).
        for (t, ids) in &batches {
            for id in ids {
                let k = (t.name.clone(), id.clone());
                assert!(world.log.stored.contains_key(&k), "{k:?} not stored");
            }
        }
        eprintln!(
            "cluster campaign same-batches: round {} killed {} (partition {p}) failover {took:?} ({:?})",
            round + 1,
            world.cluster.nodes[owner].name,
            world.started.elapsed()
        );
        last_round = batches;
    }
    world.report("same-batches", seed);
}

/// A zombie owner, round after round: a partition's owner is stopped (SIGSTOP) past its
/// lease while clients send through every node; another node takes the partition over and
/// appends; the zombie is woken (SIGCONT) with a batch of that partition sent to it just
/// before: its stale append is refused (the fence), or its renewal finds the lease lost, and
/// it steps down; nothing it had in flight is stored twice or lost.
#[test]
fn zombie_owners_are_fenced_and_step_down() {
    let rounds = rounds(2);
    let seed = seed();
    eprintln!("cluster campaign zombie: {rounds} rounds, INLET_CLUSTER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut world = World::start(0, 0);
    for round in 0..rounds {
        let p = rng.below(u64::from(PARTITIONS)) as u32;
        let zombie = world.cluster.owner_of(&[0, 1, 2], p);
        let others: Vec<usize> = (0..3).filter(|&n| n != zombie).collect();
        let steps_before = world.cluster.nodes[zombie]
            .log
            .lock()
            .unwrap()
            .matches("stepping down")
            .count();
        let load = Load::start(&world, 2, &format!("z{round}"), rng.next());
        load.progress(3, DEADLINE * 2)
            .expect("the load gets answers before the stop");
        world.cluster.nodes[zombie].signal("STOP");
        let stopped = Instant::now();
        world.failovers += 1;
        wait_for("another node to take the zombie's partition over", || {
            others.iter().any(|&n| {
                world.cluster.nodes[n]
                    .owned()
                    .is_some_and(|o| o.contains(&p))
            })
        });
        // The new owner appends (through either live node), so the zombie's last known
        // sequence is stale.
        let tenant = world.probe_tenant(p);
        let live: Vec<SocketAddr> = others.iter().map(|&n| world.addrs()[n]).collect();
        let mut answers = vec![probe(
            &live,
            &tenant,
            &format!("zp{round}"),
            &world.requests,
        )];
        world.failover_times.push(stopped.elapsed());
        // A batch to the zombie, in flight when it wakes up.
        let (zaddr, key, name) = (
            world.addrs()[zombie],
            tenant.key.clone(),
            tenant.name.clone(),
        );
        let in_flight = std::thread::spawn(move || {
            let ids: Vec<String> = (0..5).map(|i| format!("zz{round}-{i}")).collect();
            post(zaddr, &key, &ids).map(|r| (name, r))
        });
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        world.cluster.nodes[zombie].signal("CONT");
        answers.extend(in_flight.join().expect("the in-flight batch"));
        let node = &world.cluster.nodes[zombie];
        wait_for(&format!("{}, the zombie, to step down", node.name), || {
            node.log.lock().unwrap().matches("stepping down").count() > steps_before
        });
        load.progress(3, DEADLINE * 2)
            .expect("the load gets answers after the zombie woke");
        answers.extend(load.finish());
        world.check(&answers);
        eprintln!(
            "cluster campaign zombie: round {} stopped {} (partition {p}), taken over after {:?} ({:?})",
            round + 1,
            world.cluster.nodes[zombie].name,
            world.failover_times.last().unwrap(),
            world.started.elapsed()
        );
    }
    world.save_logs("zombie");
    world.report("zombie", seed);
}

/// A node's data dir deleted, round after round: under load, a node is killed, its data dir
/// emptied, and it starts again under its name; it takes its partitions back, rebuilds them
/// (and the admin data) from the engine, and reaches the same state: every tenant known,
/// counters equal to the stored events, and every id stored before answered "duplicate"
/// through it.
#[test]
fn a_node_whose_data_dir_is_deleted_rebuilds_the_same_state() {
    let rounds = rounds(2);
    let seed = seed();
    eprintln!("cluster campaign rebuild: {rounds} rounds, INLET_CLUSTER_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut world = World::start(0, 0);
    for round in 0..rounds {
        let n = rng.below(3) as usize;
        let load = Load::start(&world, 2, &format!("r{round}"), rng.next());
        load.progress(5, DEADLINE * 2)
            .expect("the load gets answers before the kill");
        world.cluster.nodes[n].kill();
        let killed = Instant::now();
        world.failovers += 1;
        let data = world.cluster.nodes[n].data.clone();
        std::fs::remove_dir_all(&data).unwrap();
        std::fs::create_dir(&data).unwrap();
        let name = world.cluster.nodes[n].name.clone();
        world.cluster.nodes[n] = Node::start(&name, &data, &world.engine);
        load.progress(5, DEADLINE * 2)
            .expect("the load gets answers after the restart");
        let mut answers = load.finish();
        world.failover_times.push(killed.elapsed());
        world.log.catch_up(&world.engine);
        // The same admin data: every tenant, through the rebuilt node.
        let used = world.cluster.nodes[n].used();
        for t in &world.tenants {
            assert!(used.contains_key(&t.name), "{name} lost tenant {}", t.name);
        }
        // The same events: ids stored before, sent again through the rebuilt node, are
        // duplicates (a 503 while partitions settle is retried on that node).
        let addr = [world.addrs()[n]];
        for t in world.uncapped() {
            let mut old: Vec<String> = world
                .log
                .stored
                .keys()
                .filter(|(tenant, _)| *tenant == t.name)
                .map(|(_, id)| id.clone())
                .collect();
            old.sort_unstable();
            let pick: Vec<String> = (0..old.len().min(10))
                .map(|_| old[rng.below(old.len() as u64) as usize].clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            if pick.is_empty() {
                continue;
            }
            let r = send_retrying(&addr, 0, &t.key, &pick, &world.requests);
            assert!(
                r.iter().all(|(_, s)| s == "duplicate"),
                "{name} after its rebuild, {}: {r:?}",
                t.name
            );
            answers.push((t.name.clone(), r));
        }
        world.check(&answers);
        eprintln!(
            "cluster campaign rebuild: round {} rebuilt {name}, stored {} ({:?})",
            round + 1,
            world.log.stored.len(),
            world.started.elapsed()
        );
    }
    world.save_logs("rebuild");
    world.report("rebuild", seed);
}
