//! Geo and network from an IP address: MaxMind-format databases (`.mmdb`: MaxMind's GeoLite2
//! and GeoIP2, DB-IP's lite databases, IPinfo's lite database), read whole into memory, looked
//! up in order; the first database that answers a field gives it.
//!
//! Each file is read again when its modification time or length changes (polled) and on
//! SIGHUP; a file that no longer opens leaves the one read before in use, logged and counted.

use serde::Deserialize;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

type Reader = maxminddb::Reader<Vec<u8>>;

/// The configured databases, in lookup order.
pub struct Geo {
    paths: Vec<PathBuf>,
    /// The databases read, with the answers found in them; a reload puts a new one here.
    state: RwLock<Arc<State>>,
    /// The (modification time, length) of each file last read, or last found unreadable.
    seen: Mutex<Vec<Stamp>>,
    /// Reloads that replaced a database, and reloads that failed (the old one kept).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

/// The databases as read, and a cache of what their records render to. Many addresses
/// lead to the same record (a city's, a network's): a lookup walks the tree to the
/// record's offset, and decodes the record only when the offsets are new.
pub struct State {
    readers: Vec<Arc<Reader>>,
    /// Answers by address or block (see [`NearKey`]): a repeated address costs one set of
    /// [`WAYS`] entries compared, no tree walk, no record.
    near: Sets<NearKey>,
    /// Answers by record offsets, one per database (see [`Key`]).
    records: Sets<Key>,
}

/// Addresses or blocks remembered: a working set of users, each with a home and a mobile
/// address, fits with room to spare.
const NEAR: usize = 262_144;
/// Distinct records (a city's, a network's) remembered.
const RECORDS: usize = 32_768;
/// Entries per set: an address competes only with those whose block hashes to its set.
const WAYS: usize = 8;
/// Locks per cache, so that request threads seldom wait for each other.
const LOCKS: usize = 64;

/// A cache of fixed size, allocated whole when the databases are read and never grown or
/// dropped at once: sets of [`WAYS`] entries, each key kept in the set its hash names, the
/// least recently used entry of the set replaced. An answer is `None` when no database
/// knows the address.
struct Sets<K> {
    shards: Box<[Shard<K>]>,
    /// Never looked up: marks an empty entry.
    empty: K,
    seed: u64,
}

/// A lock's sets, one after the other.
type Shard<K> = Mutex<Box<[Slot<K>]>>;

#[derive(Clone)]
struct Slot<K> {
    key: K,
    v: Option<Arc<Rendered>>,
}

impl<K: Copy + PartialEq> Sets<K> {
    fn new(entries: usize, empty: K) -> Sets<K> {
        let per_shard = entries / LOCKS / WAYS * WAYS;
        let slot = Slot {
            key: empty,
            v: None,
        };
        Sets {
            shards: (0..LOCKS)
                .map(|_| Mutex::new(vec![slot.clone(); per_shard].into_boxed_slice()))
                .collect(),
            empty,
            seed: std::hash::RandomState::new().hash_one(0u64),
        }
    }

    /// The set of `bits` (a hash of them, seeded per cache so that senders cannot aim
    /// their addresses at one set): its shard and its first entry there.
    fn set_of(&self, bits: [u64; 2]) -> (usize, usize) {
        let mut x = bits[0].wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ bits[1] ^ self.seed;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        ((x % LOCKS as u64) as usize, (x >> 32) as usize)
    }

    fn with_set<T>(&self, bits: [u64; 2], f: impl FnOnce(&mut [Slot<K>]) -> T) -> T {
        let (shard, at) = self.set_of(bits);
        let mut slots = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        let (len, sets) = (slots.len(), slots.len() / WAYS);
        let first = at % sets.max(1) * WAYS;
        f(&mut slots[first..(first + WAYS).min(len)])
    }

    /// The answer of the first entry `hit` takes in the set of `bits`, made the most
    /// recently used.
    fn get(&self, bits: [u64; 2], hit: impl Fn(&K) -> bool) -> Option<Option<Arc<Rendered>>> {
        self.read(bits, hit, |v| v.cloned())
    }

    /// `f` of the answer of the first entry `hit` takes in the set of `bits` (as
    /// [`Sets::get`]), called under the set's lock: a hit takes no count of the answer's
    /// owners (an atomic write that request threads would contend for).
    fn read<T>(
        &self,
        bits: [u64; 2],
        hit: impl Fn(&K) -> bool,
        f: impl FnOnce(Option<&Arc<Rendered>>) -> T,
    ) -> Option<T> {
        let empty = self.empty;
        self.with_set(bits, |set| {
            let i = set.iter().position(|s| s.key != empty && hit(&s.key))?;
            set[..=i].rotate_right(1);
            Some(f(set[0].v.as_ref()))
        })
    }

    /// Remembers `key`'s answer in the set of `bits`, in place of the least recently used
    /// entry (or of `key`'s own, when another thread put it meanwhile).
    fn put(&self, bits: [u64; 2], key: K, v: Option<Arc<Rendered>>) {
        self.with_set(bits, |set| {
            let Some(last) = set.len().checked_sub(1) else {
                return;
            };
            let i = set.iter().position(|s| s.key == key).unwrap_or(last);
            set[..=i].rotate_right(1);
            set[0] = Slot { key, v };
        });
    }
}

/// An address, or the /24 (IPv4) or /48 (IPv6) block around it when every database's
/// network for it covers the whole block (so that every address of the block has its
/// answer). An address is kept in the set of its block, so one set answers both.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct NearKey {
    bits: [u64; 2],
    /// 32 or 128: an address; 24 or 48: a block; 0: none (an empty entry).
    len: u8,
}

impl NearKey {
    const NONE: NearKey = NearKey {
        bits: [0; 2],
        len: 0,
    };

    fn addr(ip: IpAddr) -> NearKey {
        match ip {
            IpAddr::V4(a) => NearKey {
                bits: [0, u32::from(a).into()],
                len: 32,
            },
            IpAddr::V6(a) => NearKey {
                bits: split(a.into()),
                len: 128,
            },
        }
    }

    fn block(ip: IpAddr) -> NearKey {
        match ip {
            IpAddr::V4(a) => NearKey {
                bits: [0, (u32::from(a) & !0xff).into()],
                len: 24,
            },
            IpAddr::V6(a) => NearKey {
                bits: split(u128::from(a) & !((1u128 << 80) - 1)),
                len: 48,
            },
        }
    }

    /// Whether the network a file found for `ip` (an IPv4 one or not, of `prefix` bits)
    /// holds the whole block around `ip`.
    fn covers(ip: IpAddr, v4_network: bool, prefix: u8) -> bool {
        match (ip, v4_network) {
            (IpAddr::V4(_), true) => prefix <= 24,
            // Above the IPv4 subtree of an IPv6 file: every IPv4 address.
            (IpAddr::V4(_), false) => true,
            (IpAddr::V6(_), _) => prefix <= 48,
        }
    }
}

fn split(v: u128) -> [u64; 2] {
    [(v >> 64) as u64, v as u64]
}

/// The record offsets of one address, one per database (`u64::MAX`: none); only the first
/// [`KEYED`] databases are cached.
type Key = [u64; KEYED];
const KEYED: usize = 4;

/// What an address adds to `context`, as JSON text: `geo` and `asn` objects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub geo: Option<Box<str>>,
    pub asn: Option<Box<str>>,
    /// The enrichment dictionary's id of both as they are added together
    /// (`store::enrichments`).
    pub memo: crate::store::enrichments::Memo,
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads and checks one database file: its metadata, and one lookup through its tree.
fn open(path: &Path) -> Result<Reader, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = Reader::from_source(bytes)
        .map_err(|e| format!("{}: not a MaxMind DB file: {e}", path.display()))?;
    let probe: IpAddr = match reader.metadata().ip_version {
        4 => IpAddr::from([192, 0, 2, 1]),
        _ => IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]),
    };
    if let Err(e) = reader
        .lookup(probe)
        .and_then(|r| r.decode::<Record>().map(|_| ()))
    {
        return Err(format!("{}: damaged MaxMind DB file: {e}", path.display()));
    }
    Ok(reader)
}

impl Geo {
    /// Opens every file; the first that does not open is the error (naming it).
    pub fn open(paths: &[PathBuf]) -> Result<Geo, String> {
        let mut readers = Vec::with_capacity(paths.len());
        let mut seen = Vec::with_capacity(paths.len());
        for path in paths {
            seen.push(stamp(path));
            readers.push(Arc::new(open(path)?));
        }
        Ok(Geo {
            paths: paths.to_vec(),
            state: RwLock::new(Arc::new(State::new(readers))),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.paths.iter().map(PathBuf::as_path)
    }

    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads again each file whose modification time or length changed (`all`: every file,
    /// as on SIGHUP). A file that fails keeps the database read before; it is logged and
    /// counted once per change of the file.
    pub fn reload(&self, all: bool) {
        // One reload at a time: the lock on the stamps is held throughout.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut readers = self.state().readers.clone();
        let mut replaced = 0;
        for (i, path) in self.paths.iter().enumerate() {
            let now = stamp(path);
            if !all && seen[i] == now {
                continue;
            }
            seen[i] = now;
            match open(path) {
                Ok(reader) => {
                    readers[i] = Arc::new(reader);
                    replaced += 1;
                    tracing::info!(file = %path.display(), "geo database reloaded");
                }
                Err(error) => {
                    self.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        error = %error,
                        "geo database reload failed; still using the one read before"
                    );
                }
            }
        }
        if replaced > 0 {
            // With a cache of its own: nothing found in the old files is answered again.
            *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(State::new(readers));
            // Counted once in use: whoever sees the count sees the new files answer.
            self.reloads.fetch_add(replaced, Ordering::Relaxed);
        }
    }

    /// What the databases know of `ip`; empty when none has it.
    pub fn lookup(&self, ip: IpAddr) -> Place {
        self.state().place(ip)
    }

    /// What `ip` adds to `context` (see [`State::render`]).
    pub fn render(&self, ip: IpAddr) -> Option<Arc<Rendered>> {
        self.current().render(ip)
    }

    /// The databases in use now: a submission takes them once for all its events.
    pub fn current(&self) -> Arc<State> {
        self.state()
    }
}

impl State {
    fn new(readers: Vec<Arc<Reader>>) -> State {
        State {
            readers,
            near: Sets::new(NEAR, NearKey::NONE),
            records: Sets::new(RECORDS, [u64::MAX; KEYED]),
        }
    }

    /// What `ip` adds to `context` (see [`Place::render`]); `None` when no database has
    /// it. Answered by address (or its block) when looked up lately, else by its records
    /// when they were rendered lately.
    pub fn render(&self, ip: IpAddr) -> Option<Arc<Rendered>> {
        self.render_with(ip, |v| v.cloned())
    }

    /// `f` of what `ip` adds to `context` (see [`State::render`]); on a hit, called under
    /// a lock of the cache: `f` should only copy the answer.
    pub fn render_with<T>(&self, ip: IpAddr, f: impl FnOnce(Option<&Arc<Rendered>>) -> T) -> T {
        let (block, addr) = (NearKey::block(ip), NearKey::addr(ip));
        let mut f = Some(f);
        let hit = |k: &NearKey| *k == block || *k == addr;
        if let Some(v) = self
            .near
            .read(block.bits, hit, |v| (f.take().expect("once"))(v))
        {
            return v;
        }
        let (v, whole_block) = self.render_shared(ip);
        let key = if whole_block { block } else { addr };
        self.near.put(block.bits, key, v.clone());
        (f.take().expect("not called on a miss"))(v.as_ref())
    }

    /// [`State::render`] without the cache by address, and whether the answer holds for
    /// the address's whole block.
    fn render_shared(&self, ip: IpAddr) -> (Option<Arc<Rendered>>, bool) {
        let mut key = [u64::MAX; KEYED];
        let mut whole_block = true;
        let mut found = Vec::with_capacity(self.readers.len());
        for (i, reader) in self.readers.iter().enumerate() {
            // An address the file cannot hold (IPv6 in an IPv4 file): nor can its block.
            let Ok(f) = reader.lookup(ip) else {
                continue;
            };
            whole_block &= f
                .network()
                .is_ok_and(|n| NearKey::covers(ip, n.is_ipv4(), n.prefix()));
            if let (Some(slot), Some(offset)) = (key.get_mut(i), f.offset()) {
                *slot = offset as u64;
            }
            found.push(f);
        }
        let place = || {
            let mut place = Place::default();
            for f in &found {
                // A damaged record: nothing from this file.
                if let Ok(Some(r)) = f.decode::<Record>() {
                    place.fill(r);
                }
                if place.is_full() {
                    break;
                }
            }
            place
        };
        if self.readers.len() > KEYED {
            let r = place().render();
            return ((r != Rendered::default()).then(|| Arc::new(r)), whole_block);
        }
        if key == [u64::MAX; KEYED] {
            return (None, whole_block);
        }
        let bits = [
            key[0] ^ key[2].rotate_left(32),
            key[1] ^ key[3].rotate_left(32),
        ];
        if let Some(v) = self.records.get(bits, |k| *k == key) {
            return (v, whole_block);
        }
        let v = Some(Arc::new(place().render()));
        self.records.put(bits, key, v.clone());
        (v, whole_block)
    }

    fn place(&self, ip: IpAddr) -> Place {
        let mut place = Place::default();
        for reader in &self.readers {
            // An address the database cannot hold (IPv6 in an IPv4 file) or a damaged
            // record: nothing from this file.
            let Ok(Some(r)) = reader.lookup(ip).and_then(|l| l.decode::<Record>()) else {
                continue;
            };
            place.fill(r);
            if place.is_full() {
                break;
            }
        }
        place
    }
}

/// The fields enrichment adds from an address (`context.geo`, `context.asn`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Place {
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// The first subdivision: its ISO 3166-2 code (without the country), else its name.
    pub region: Option<String>,
    /// English name.
    pub city: Option<String>,
    pub asn: Option<u32>,
    pub org: Option<String>,
}

impl Place {
    fn is_full(&self) -> bool {
        self.country.is_some()
            && self.region.is_some()
            && self.city.is_some()
            && self.asn.is_some()
            && self.org.is_some()
    }

    pub fn is_empty(&self) -> bool {
        *self == Place::default()
    }

    /// `context.geo` (`country`, `region`, `city`) and `context.asn` (`number`, `org`) as
    /// JSON text, each `None` when it would be empty.
    pub fn render(&self) -> Rendered {
        use serde_json::{Map, Value};
        let mut g = Map::new();
        for (k, v) in [
            ("country", &self.country),
            ("region", &self.region),
            ("city", &self.city),
        ] {
            if let Some(v) = v {
                g.insert(k.into(), Value::String(v.clone()));
            }
        }
        let mut a = Map::new();
        if let Some(n) = self.asn {
            a.insert("number".into(), Value::from(n));
        }
        if let Some(org) = &self.org {
            a.insert("org".into(), Value::String(org.clone()));
        }
        let text = |m: Map<String, Value>| {
            (!m.is_empty()).then(|| Value::Object(m).to_string().into_boxed_str())
        };
        Rendered {
            geo: text(g),
            asn: text(a),
            memo: Default::default(),
        }
    }

    fn fill(&mut self, r: Record<'_>) {
        let owned = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        if self.country.is_none() {
            self.country = owned(
                r.country
                    .as_ref()
                    .and_then(|c| c.iso_code)
                    .or(r.country_code),
            );
        }
        if self.region.is_none() {
            self.region = owned(
                r.subdivisions
                    .as_ref()
                    .and_then(|s| s.first())
                    .and_then(|s| s.iso_code.or(s.names.as_ref().and_then(|n| n.en)))
                    .or(r.state1),
            );
        }
        if self.city.is_none() {
            self.city = owned(match &r.city {
                Some(City::Named(c)) => c.names.as_ref().and_then(|n| n.en),
                Some(City::Plain(s)) => Some(*s),
                None => None,
            });
        }
        if self.asn.is_none() {
            self.asn = r.autonomous_system_number.or_else(|| {
                r.asn
                    .and_then(|a| a.strip_prefix("AS").unwrap_or(a).parse().ok())
                    .filter(|&n| n > 0)
            });
        }
        if self.org.is_none() {
            self.org = owned(r.autonomous_system_organization.or(r.as_name));
        }
    }
}

/// The fields read of a record, in the GeoIP2/GeoLite2 layout (also DB-IP's own files),
/// IPinfo's lite layout or the flat one of the ip-location-db packages; the rest of the
/// record is skipped.
#[derive(Deserialize, Default)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Named<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Named<'a>>>,
    #[serde(borrow)]
    city: Option<City<'a>>,
    /// ip-location-db: the first subdivision's name.
    state1: Option<&'a str>,
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
    /// IPinfo lite.
    country_code: Option<&'a str>,
    /// IPinfo lite: `"AS15169"`.
    asn: Option<&'a str>,
    as_name: Option<&'a str>,
}

/// `city`: GeoIP2's `{"names": {"en": ...}}`, or a plain name (ip-location-db).
#[derive(Deserialize)]
#[serde(untagged)]
enum City<'a> {
    #[serde(borrow)]
    Named(Named<'a>),
    Plain(&'a str),
}

#[derive(Deserialize, Default)]
struct Named<'a> {
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize, Default)]
struct Names<'a> {
    en: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: u8) -> Option<Arc<Rendered>> {
        Some(Arc::new(Rendered {
            geo: Some(format!(r#"{{"n":{n}}}"#).into()),
            asn: None,
            memo: Default::default(),
        }))
    }

    #[test]
    fn a_full_set_forgets_its_least_recently_used_entry_only() {
        // One set per lock: every key below shares the set of `bits`.
        let sets = Sets::new(LOCKS * WAYS, 0u64);
        let bits = [7, 9];
        for k in 1..=WAYS as u64 {
            sets.put(bits, k, answer(k as u8));
        }
        // Key 1 used again: key 2 is now the least recently used one.
        assert_eq!(sets.get(bits, |k| *k == 1), Some(answer(1)));
        sets.put(bits, 100, None);
        assert_eq!(
            sets.get(bits, |k| *k == 100),
            Some(None),
            "an answer of none"
        );
        assert_eq!(sets.get(bits, |k| *k == 2), None, "forgotten");
        for k in (1..=WAYS as u64).filter(|&k| k != 2) {
            assert_eq!(sets.get(bits, |x| *x == k), Some(answer(k as u8)), "{k}");
        }
        // Put again: replaced in place, not held twice.
        sets.put(bits, 100, answer(100));
        let held: usize = sets
            .shards
            .iter()
            .map(|s| s.lock().unwrap().iter().filter(|s| s.key == 100).count())
            .sum();
        assert_eq!(held, 1);
        assert_eq!(sets.get(bits, |k| *k == 100), Some(answer(100)));
        // The empty mark is never an answer: asked of sets that hold nothing (in `sets`,
        // the set of other bits is that of `bits` one time in `LOCKS`, the seed is random).
        let empty = Sets::new(LOCKS * WAYS, 0u64);
        assert_eq!(empty.get([1, 2], |_| true), None);
    }

    #[test]
    fn the_caches_hold_what_they_were_sized_for() {
        let s = State::new(Vec::new());
        fn slots<K>(c: &Sets<K>) -> usize {
            c.shards.iter().map(|s| s.lock().unwrap().len()).sum()
        }
        assert_eq!(slots(&s.near), NEAR);
        assert_eq!(slots(&s.records), RECORDS);
        // A working set that fits keeps nearly all of its entries (sets fill unevenly).
        let sets = Sets::new(NEAR, NearKey::NONE);
        let ips: Vec<IpAddr> = (0..NEAR as u32 / 2)
            .map(|i| IpAddr::from((i.wrapping_mul(2_654_435_761) | 1).to_be_bytes()))
            .collect();
        for &ip in &ips {
            let k = NearKey::block(ip);
            sets.put(k.bits, k, None);
        }
        let kept = ips
            .iter()
            .filter(|&&ip| {
                let k = NearKey::block(ip);
                sets.get(k.bits, |x| *x == k).is_some()
            })
            .count();
        assert!(kept > ips.len() * 95 / 100, "{kept} of {}", ips.len());
    }
}
