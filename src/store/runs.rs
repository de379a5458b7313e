//! Sorted runs: a set of byte keys stored as several immutable sorted tables that are merged
//! in the background, so that adding keys costs sequential writes instead of random B-tree
//! inserts (the identity graph's index, `super::identity`, and the dedupe index's
//! fingerprints, `super::dedupe`, are kept this way).
//!
//! Why: a redb B-tree is copy-on-write, so inserting random keys into one big table rewrites
//! about one 4 KiB page per key once the table has more leaves than a commit has keys, and
//! the share of those pages outside the cache grows with the table. Here every chunk of keys
//! becomes a new table written in key order (appends), and tables are merged geometrically:
//! - a new run is on level 0; when a level holds [`FANOUT`] runs, they are merged into one
//!   run of the next level, so a key is rewritten about log_FANOUT(total / chunk) times, each
//!   time sequentially;
//! - a merge is done in steps of a bounded number of keys ([`RunSet::merge_step`]), each in
//!   the caller's write transaction, so the writer thread is never held long. Its progress
//!   (the last key written) is stored with the keys, so a crash resumes it exactly;
//! - readers see the runs listed in the set: a merge's inputs stay listed (and readable)
//!   until the transaction that completes it swaps them for the output.
//!
//! The set is a set: a key added twice is kept once by the next merge; readers merge what
//! the runs hold. Keys are never removed (the identity graph only grows; its readers, and
//! the dedupe index's, skip entries that point at removed events).
//!
//! A run table does not hold one entry per key: it holds **blocks**, each up to
//! [`BLOCK_BYTES`] of consecutive keys under the block's first key (`first key → version
//! byte ++ (u16 BE length ++ key)*`). A redb insert costs about a microsecond whatever its
//! size, so writing a block per ~50 keys instead of an entry per key is what makes adding and
//! merging cheap; a lookup reads the block at or before the key.
//!
//! The list of runs and the merge state are one JSON record in `META` under the set's name.

use super::Result;
use super::codec::{decode_config, encode_config};
use super::tables::META;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// Runs of one level merged together.
pub const FANOUT: usize = 8;

/// Largest block of keys stored as one redb value (a block holds at least one key).
pub const BLOCK_BYTES: usize = 4000;
const BLOCK_V1: u8 = 1;

/// How many keys of `key_len` bytes fill a block. A step ([`RunSet::merge_step`],
/// [`RunSet::add_step`]) ends with its last block written, however full: a set of keys of
/// one size stays in full blocks when its steps are multiples of this.
pub const fn keys_per_block(key_len: usize) -> usize {
    (BLOCK_BYTES - 1) / (2 + key_len)
}

/// One immutable sorted run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: u32,
    pub level: u8,
    pub keys: u64,
}

/// A merge in progress: `inputs` (runs of `level`) into run `output` of `level + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    pub output: u32,
    pub level: u8,
    pub inputs: Vec<u32>,
    /// Keys written to the output so far.
    pub written: u64,
    /// The last key written: the next step continues after it.
    pub after: Option<Vec<u8>>,
}

/// A level-0 run being written in steps ([`RunSet::add_step`]): not listed in
/// [`RunSet::runs`] until its last key is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adding {
    pub id: u32,
    /// Keys written so far; the next step continues with the key after them.
    pub written: u64,
}

/// The runs of one set and its merges in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSet {
    pub next_id: u32,
    /// Oldest first.
    pub runs: Vec<Run>,
    pub merges: Vec<Merge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adding: Option<Adding>,
}

/// The table name of run `id` of set `set`. Every run table of every set starts with
/// [`RUN_TABLE_PREFIX`] (backups copy them by that prefix).
pub fn table_name(set: &str, id: u32) -> String {
    format!("{RUN_TABLE_PREFIX}{set}.{id:010}")
}

pub const RUN_TABLE_PREFIX: &str = "run.";

/// The definition of a run table named `name` (see [`table_name`]).
pub fn def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

type RunTableMut<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Collects keys into blocks and writes each full block to a run table (under the block's
/// first key, which is read back from the block itself).
struct BlockWriter {
    block: Vec<u8>,
    /// Offset of the last key's length prefix (0 while the block is empty).
    last: usize,
}

impl BlockWriter {
    fn new() -> BlockWriter {
        let mut block = Vec::with_capacity(BLOCK_BYTES);
        block.push(BLOCK_V1);
        BlockWriter { block, last: 0 }
    }

    fn push(&mut self, table: &mut RunTableMut<'_>, key: &[u8]) -> Result<()> {
        if self.last != 0 && self.block.len() + 2 + key.len() > BLOCK_BYTES {
            self.flush(table)?;
        }
        // Keys are at most a few hundred bytes (identifiers are capped by validation).
        let len = u16::try_from(key.len())
            .map_err(|_| super::Error::Internal(format!("run key of {} bytes", key.len())))?;
        self.last = self.block.len();
        self.block.extend_from_slice(&len.to_be_bytes());
        self.block.extend_from_slice(key);
        Ok(())
    }

    /// The key pushed last, while its block is not yet written.
    fn last(&self) -> Option<&[u8]> {
        (self.last != 0).then(|| key_at(&self.block, self.last))
    }

    fn flush(&mut self, table: &mut RunTableMut<'_>) -> Result<()> {
        if self.last != 0 {
            table.insert(key_at(&self.block, 1), self.block.as_slice())?;
            self.block.truncate(1);
            self.last = 0;
        }
        Ok(())
    }
}

/// The key whose length prefix is at `at` in a block this module wrote or checked.
fn key_at(block: &[u8], at: usize) -> &[u8] {
    let len = u16::from_be_bytes([block[at], block[at + 1]]) as usize;
    &block[at + 2..at + 2 + len]
}

/// Checks a block's framing: the version byte, then length-prefixed keys that end exactly
/// at its end. A block that passes can be walked without further checks.
fn check_block(bytes: &[u8]) -> Result<()> {
    let bad = || super::Error::Corrupt("undecodable run block".into());
    let Some((&BLOCK_V1, mut rest)) = bytes.split_first() else {
        return Err(bad());
    };
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let len = key_len(rest).ok_or_else(bad)?;
        rest = rest.get(2 + len..).ok_or_else(bad)?;
    }
    Ok(())
}

/// The length prefix at the start of `at`.
fn key_len(at: &[u8]) -> Option<usize> {
    let len = at.get(..2)?;
    Some(u16::from_be_bytes([len[0], len[1]]) as usize)
}

type Block<'t> = redb::AccessGuard<'t, &'static [u8]>;

/// Reads the keys of one run in order, from a starting point, without copying them: the
/// current key is a slice of the block redb handed out ([`Cursor::head`]).
struct Cursor<'t> {
    blocks: redb::Range<'t, &'static [u8], &'static [u8]>,
    /// The current block (checked) and the offset of the current key's length prefix in it;
    /// `None` once the run is exhausted.
    block: Option<(Block<'t>, usize)>,
}

impl<'t> Cursor<'t> {
    /// The keys of `table` within `start` (and every key after it).
    fn new(
        table: &'t impl ReadableTable<&'static [u8], &'static [u8]>,
        start: Bound<&[u8]>,
    ) -> Result<Cursor<'t>> {
        let pivot = match start {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        };
        let rest: (Bound<&[u8]>, Bound<&[u8]>) = match pivot {
            Some(k) => (Bound::Excluded(k), Bound::Unbounded),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut c = Cursor {
            blocks: table.range::<&[u8]>(rest)?,
            block: None,
        };
        if let Some(k) = pivot
            && let Some(row) = table.range::<&[u8]>(..=k)?.next_back()
        {
            // The block that may hold keys at and after `k` starts at or before it.
            let block = row?.1;
            check_block(block.value())?;
            c.block = Some((block, 1));
            while let Some(head) = c.head()
                && match start {
                    Bound::Included(k) => head < k,
                    Bound::Excluded(k) => head <= k,
                    Bound::Unbounded => false,
                }
            {
                c.advance()?;
            }
            if c.block.is_some() {
                return Ok(c);
            }
        }
        c.load_next()?;
        Ok(c)
    }

    /// Moves to the first key of the next block (or to the end).
    fn load_next(&mut self) -> Result<()> {
        self.block = match self.blocks.next() {
            Some(row) => {
                let block = row?.1;
                check_block(block.value())?;
                Some((block, 1))
            }
            None => None,
        };
        Ok(())
    }

    /// The current key, `None` at the end.
    fn head(&self) -> Option<&[u8]> {
        let (block, at) = self.block.as_ref()?;
        // The block was checked when loaded.
        Some(key_at(block.value(), *at))
    }

    /// Steps past the current key.
    fn advance(&mut self) -> Result<()> {
        let Some((block, at)) = self.block.as_mut() else {
            return Ok(());
        };
        let bytes = block.value();
        *at += 2 + key_at(bytes, *at).len();
        if *at >= bytes.len() {
            self.load_next()?;
        }
        Ok(())
    }

    /// The current key, copied, and a step past it.
    fn next(&mut self) -> Result<Option<Vec<u8>>> {
        let key = self.head().map(<[u8]>::to_vec);
        self.advance()?;
        Ok(key)
    }
}

impl RunSet {
    /// The set stored under `set` in `meta` (empty when there is none).
    pub fn load(
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        set: &str,
    ) -> Result<RunSet> {
        match meta.get(set)? {
            Some(bytes) => Ok(decode_config("run set", bytes.value())?),
            None => Ok(RunSet::default()),
        }
    }

    fn save(&self, txn: &WriteTransaction, set: &str) -> Result<()> {
        txn.open_table(META)?
            .insert(set, encode_config(self).as_slice())?;
        Ok(())
    }

    /// Whether merges are waiting for steps.
    pub fn merging(&self) -> bool {
        !self.merges.is_empty()
    }

    /// Adds `keys` (sorted, without repeats) as a new run of level 0 and starts the merges
    /// that are due, in `txn`. Returns the new run's id (none for no keys). The keys are
    /// taken from an iterator so that a caller needs no second copy of them.
    pub fn add<'k>(
        txn: &WriteTransaction,
        set: &str,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<Option<u32>> {
        let mut this = RunSet::load(&txn.open_table(META)?, set)?;
        let mut keys = keys.into_iter().peekable();
        let mut added = None;
        if keys.peek().is_some() {
            let id = this.take_id();
            added = Some(id);
            let name = table_name(set, id);
            let mut table = txn.open_table(def(&name))?;
            let mut w = BlockWriter::new();
            let mut count = 0u64;
            for k in keys {
                debug_assert!(w.last().is_none_or(|last| last < k), "keys must be sorted");
                w.push(&mut table, k)?;
                count += 1;
            }
            w.flush(&mut table)?;
            this.runs.push(Run {
                id,
                level: 0,
                keys: count,
            });
        }
        this.plan_merges();
        this.save(txn, set)?;
        Ok(added)
    }

    /// Writes the next at most `budget` of `keys` (sorted, without repeats; the same slice at
    /// every step) into a level-0 run, in `txn`: the run a previous step began, or a new one
    /// if there is none or `restart` (which drops what an earlier step wrote: a caller that
    /// lost its keys, as after a restart, begins again). The run is listed, and the merges it
    /// makes due are started, only by the step that writes its last key, so readers never see
    /// part of it; its id is then returned. No keys: nothing happens.
    pub fn add_step<K: AsRef<[u8]>>(
        txn: &WriteTransaction,
        set: &str,
        keys: &[K],
        budget: usize,
        restart: bool,
    ) -> Result<Option<u32>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut this = RunSet::load(&txn.open_table(META)?, set)?;
        if restart && let Some(stale) = this.adding.take() {
            txn.delete_table(def(&table_name(set, stale.id)))?;
        }
        let Adding { id, written } = match this.adding.clone() {
            Some(a) => a,
            None => Adding {
                id: this.take_id(),
                written: 0,
            },
        };
        // More written than given: not the keys the run was begun with. Failing the commit
        // makes the writer reload, and its next freeze begins anew.
        let from = usize::try_from(written)
            .ok()
            .filter(|&w| w <= keys.len())
            .ok_or_else(|| {
                super::Error::Internal(format!(
                    "run {id}: {written} keys written of {}",
                    keys.len()
                ))
            })?;
        let to = from.saturating_add(budget.max(1)).min(keys.len());
        debug_assert!(
            from == 0 || keys[from - 1].as_ref() < keys[from].as_ref(),
            "keys must be sorted"
        );
        let mut table = txn.open_table(def(&table_name(set, id)))?;
        let mut w = BlockWriter::new();
        for k in &keys[from..to] {
            debug_assert!(
                w.last().is_none_or(|last| last < k.as_ref()),
                "keys must be sorted"
            );
            w.push(&mut table, k.as_ref())?;
        }
        w.flush(&mut table)?;
        drop(table);
        let done = to == keys.len();
        if done {
            this.adding = None;
            this.runs.push(Run {
                id,
                level: 0,
                keys: to as u64,
            });
            this.plan_merges();
        } else {
            this.adding = Some(Adding {
                id,
                written: to as u64,
            });
        }
        this.save(txn, set)?;
        Ok(done.then_some(id))
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Starts a merge for every level that holds [`FANOUT`] runs not already being merged.
    fn plan_merges(&mut self) {
        loop {
            let busy: Vec<u32> = self
                .merges
                .iter()
                .flat_map(|m| m.inputs.iter().copied())
                .collect();
            let mut levels: Vec<u8> = self.runs.iter().map(|r| r.level).collect();
            levels.sort_unstable();
            levels.dedup();
            let due = levels.into_iter().find_map(|level| {
                let idle: Vec<u32> = self
                    .runs
                    .iter()
                    .filter(|r| r.level == level && !busy.contains(&r.id))
                    .map(|r| r.id)
                    .take(FANOUT)
                    .collect();
                (idle.len() == FANOUT).then_some((level, idle))
            });
            let Some((level, inputs)) = due else {
                return;
            };
            let output = self.take_id();
            self.merges.push(Merge {
                output,
                level,
                inputs,
                written: 0,
                after: None,
            });
        }
    }

    /// Writes at most `budget` keys of the pending merges (lowest level first, so small runs
    /// never pile up behind a large merge), completing the merges that end, in `txn`.
    /// Returns whether merge work is left.
    pub fn merge_step(txn: &WriteTransaction, set: &str, mut budget: usize) -> Result<bool> {
        let mut this = RunSet::load(&txn.open_table(META)?, set)?;
        this.merges.sort_by_key(|m| m.level);
        let mut i = 0;
        while i < this.merges.len() && budget > 0 {
            let (done, used) = step_one(txn, set, &mut this.merges[i], budget)?;
            budget -= used;
            if done {
                let m = this.merges.remove(i);
                for id in &m.inputs {
                    txn.delete_table(def(&table_name(set, *id)))?;
                }
                this.runs.retain(|r| !m.inputs.contains(&r.id));
                // The output takes the place of its inputs in age order (before every run
                // added since).
                let at = this
                    .runs
                    .iter()
                    .position(|r| r.id > m.output)
                    .unwrap_or(this.runs.len());
                this.runs.insert(
                    at,
                    Run {
                        id: m.output,
                        level: m.level + 1,
                        keys: m.written,
                    },
                );
                this.plan_merges();
                this.merges.sort_by_key(|m| m.level);
                i = 0;
            } else {
                i += 1;
            }
        }
        this.save(txn, set)?;
        Ok(this.merging())
    }
}

/// Advances one merge by at most `budget` keys. Returns whether it is complete and how many
/// keys it wrote. A step ends with its last block written, so the next one starts a new
/// block after [`Merge::after`].
fn step_one(
    txn: &WriteTransaction,
    set: &str,
    m: &mut Merge,
    budget: usize,
) -> Result<(bool, usize)> {
    let names: Vec<String> = m.inputs.iter().map(|id| table_name(set, *id)).collect();
    let inputs = names
        .iter()
        .map(|n| txn.open_table(def(n)))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let start = match &m.after {
        Some(k) => Bound::Excluded(k.as_slice()),
        None => Bound::Unbounded,
    };
    let mut cursors = inputs
        .iter()
        .map(|t| Cursor::new(t, start))
        .collect::<Result<Vec<_>>>()?;
    let out_name = table_name(set, m.output);
    let mut out = txn.open_table(def(&out_name))?;
    let mut w = BlockWriter::new();
    let mut used = 0;
    while used < budget {
        // The smallest head (a handful of inputs: a linear scan beats a heap).
        let mut min: Option<usize> = None;
        for (i, c) in cursors.iter().enumerate() {
            if let Some(h) = c.head()
                && min.is_none_or(|m| h < cursors[m].head().unwrap_or_default())
            {
                min = Some(i);
            }
        }
        let Some(min) = min else {
            break;
        };
        w.push(&mut out, cursors[min].head().unwrap_or_default())?;
        used += 1;
        // Every input holding the same key steps past it (the set keeps a key once).
        for (i, c) in cursors.iter_mut().enumerate() {
            if i != min && c.head() == w.last() {
                c.advance()?;
            }
        }
        cursors[min].advance()?;
    }
    if used > 0 {
        m.after = w.last().map(<[u8]>::to_vec);
    }
    w.flush(&mut out)?;
    m.written += used as u64;
    Ok((cursors.iter().all(|c| c.head().is_none()), used))
}

/// The runs of a set as one read transaction sees them.
pub struct Reader {
    tables: Vec<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

impl Reader {
    pub fn open(txn: &ReadTransaction, set: &str) -> Result<Reader> {
        let this = RunSet::load(&txn.open_table(META)?, set)?;
        let mut tables = Vec::with_capacity(this.runs.len());
        for r in &this.runs {
            let name = table_name(set, r.id);
            tables.push(txn.open_table(def(&name))?);
        }
        Ok(Reader { tables })
    }

    /// The smallest key at or after `lower`, in any run.
    pub fn first_from(&self, lower: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut best: Option<Vec<u8>> = None;
        for t in &self.tables {
            if let Some(k) = Cursor::new(t, Bound::Included(lower))?.next()?
                && best.as_ref().is_none_or(|b| k < *b)
            {
                best = Some(k);
            }
        }
        Ok(best)
    }

    /// Every key starting with `prefix`, sorted, each once.
    pub fn with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for t in &self.tables {
            let mut c = Cursor::new(t, Bound::Included(prefix))?;
            while let Some(k) = c.next()? {
                if !k.starts_with(prefix) {
                    break;
                }
                out.push(k);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Runs read.
    pub fn runs(&self) -> usize {
        self.tables.len()
    }
}

/// The first key at or after `lower` in one run table, handed to `f` in place (a point
/// lookup: reads the block at or before `lower`, and the next one only when `lower` is past
/// that block's last key).
pub fn seek<R>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    lower: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> Result<Option<R>> {
    if let Some(row) = table.range::<&[u8]>(..=lower)?.next_back() {
        let block = row?.1;
        let bytes = block.value();
        check_block(bytes)?;
        let mut at = 1;
        while at < bytes.len() {
            let key = key_at(bytes, at);
            if key >= lower {
                return Ok(Some(f(key)));
            }
            at += 2 + key.len();
        }
    }
    let next = table
        .range::<&[u8]>((Bound::Excluded(lower), Bound::Unbounded))?
        .next();
    match next {
        Some(row) => {
            let block = row?.1;
            check_block(block.value())?;
            Ok(Some(f(key_at(block.value(), 1))))
        }
        None => Ok(None),
    }
}

/// Hands every key of one run table to `f`, in order, in place.
pub fn for_each_key(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    mut f: impl FnMut(&[u8]),
) -> Result<()> {
    let mut c = Cursor::new(table, Bound::Unbounded)?;
    while let Some(key) = c.head() {
        f(key);
        c.advance()?;
    }
    Ok(())
}

/// Whether `name` is the table of a run (of any set).
pub fn is_run_table(name: &str) -> bool {
    name.starts_with(RUN_TABLE_PREFIX)
}

/// Drops every run of `set` (and its merges), in `txn` (whose `META` table the caller has
/// open as `meta`).
pub fn clear(
    txn: &WriteTransaction,
    meta: &mut redb::Table<&'static str, &'static [u8]>,
    set: &str,
) -> Result<()> {
    let this = RunSet::load(meta, set)?;
    let ids = this
        .runs
        .iter()
        .map(|r| r.id)
        .chain(this.merges.iter().map(|m| m.output))
        .chain(this.adding.iter().map(|a| a.id));
    for id in ids {
        txn.delete_table(def(&table_name(set, id)))?;
    }
    meta.remove(set)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
    use std::collections::BTreeSet;

    fn all(store: &Store) -> (Vec<Vec<u8>>, usize) {
        let txn = store.db().unwrap().begin_read().unwrap();
        let r = Reader::open(&txn, "t").unwrap();
        (r.with_prefix(&[]).unwrap(), r.runs())
    }

    fn state(store: &Store) -> RunSet {
        let txn = store.db().unwrap().begin_read().unwrap();
        RunSet::load(&txn.open_table(META).unwrap(), "t").unwrap()
    }

    /// Chunks of random keys (with repeats across chunks), merged in small steps, some of
    /// them rolled back as by a crash: readers always see exactly the keys added, and the
    /// runs stay few.
    #[test]
    fn merges_keep_the_set_and_bound_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut expected = BTreeSet::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for chunk in 0..300u64 {
            let mut keys: Vec<Vec<u8>> = (0..(next() % 40 + 1))
                .map(|_| (next() % 5000).to_be_bytes()[5..].to_vec())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let txn = store.db().unwrap().begin_write().unwrap();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            RunSet::add(&txn, "t", refs).unwrap();
            RunSet::merge_step(&txn, "t", (next() % 50) as usize).unwrap();
            if chunk % 7 == 3 {
                // A crash before the commit: nothing of it happened.
                txn.abort().unwrap();
            } else {
                txn.commit().unwrap();
                expected.extend(keys);
            }
            let (seen, _) = all(&store);
            assert_eq!(seen, expected.iter().cloned().collect::<Vec<_>>());
        }
        // Let the merges finish: few runs, each key once.
        loop {
            let txn = store.db().unwrap().begin_write().unwrap();
            let more = RunSet::merge_step(&txn, "t", 100).unwrap();
            txn.commit().unwrap();
            if !more {
                break;
            }
        }
        let (seen, runs) = all(&store);
        assert_eq!(seen, expected.iter().cloned().collect::<Vec<_>>());
        let set = state(&store);
        assert!(runs < 3 * FANOUT, "{runs} runs: {set:?}");
        assert!(set.runs.iter().any(|r| r.level >= 2), "{set:?}");
        let stored: u64 = set.runs.iter().map(|r| r.keys).sum();
        assert!(
            stored < 2 * expected.len() as u64,
            "{stored} keys for {}",
            expected.len()
        );
        // No table of a finished merge's input is left behind.
        let txn = store.db().unwrap().begin_read().unwrap();
        let tables = txn
            .list_tables()
            .unwrap()
            .filter(|t| is_run_table(t.name()))
            .count();
        assert_eq!(tables, runs);
    }

    /// A run added in steps is invisible until its last step, then holds exactly its keys;
    /// `restart` drops a partial run; steps given other keys than those begun with fail.
    #[test]
    fn a_run_added_in_steps_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let keys: Vec<Vec<u8>> = (0..10u16).map(|k| k.to_be_bytes().to_vec()).collect();
        let step = |keys: &[Vec<u8>], restart| {
            let txn = db.begin_write().unwrap();
            let done = RunSet::add_step(&txn, "t", keys, 4, restart);
            txn.commit().unwrap();
            done
        };
        assert_eq!(step(&keys, true).unwrap(), None);
        let stale = state(&store).adding.unwrap();
        assert_eq!(stale.written, 4);
        // Begun anew: the partial table goes, a new run starts.
        assert_eq!(step(&keys, true).unwrap(), None);
        assert_ne!(state(&store).adding.as_ref().unwrap().id, stale.id);
        assert_eq!(all(&store), (vec![], 0));
        assert!(step(&keys[..3], false).is_err(), "fewer keys than written");
        assert_eq!(step(&keys, false).unwrap(), None);
        let id = step(&keys, false).unwrap().expect("complete");
        let set = state(&store);
        assert_eq!((set.adding, set.runs.len()), (None, 1));
        assert_eq!((set.runs[0].id, set.runs[0].keys), (id, 10));
        assert_eq!(all(&store), (keys, 1));
        let txn = db.begin_read().unwrap();
        let tables = txn.list_tables().unwrap();
        let runs: Vec<String> = tables
            .map(|t| t.name().to_owned())
            .filter(|n| is_run_table(n))
            .collect();
        assert_eq!(runs, [table_name("t", id)]);
    }

    /// Merge steps of whole blocks ([`keys_per_block`]) of keys of one size leave the output
    /// in full blocks: as many as the keys need, however many steps wrote it.
    #[test]
    fn steps_of_whole_blocks_leave_full_blocks() {
        const KEY: usize = 32;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db().unwrap();
        let per_block = keys_per_block(KEY);
        let mut keys = 0u64;
        let txn = db.begin_write().unwrap();
        for run in 0..FANOUT as u64 {
            let run_keys: Vec<[u8; KEY]> = (0..300u64)
                .map(|k| {
                    let mut key = [0u8; KEY];
                    key[..8].copy_from_slice(&(k * FANOUT as u64 + run).to_be_bytes());
                    key
                })
                .collect();
            keys += run_keys.len() as u64;
            RunSet::add(&txn, "t", run_keys.iter().map(|k| k.as_slice())).unwrap();
        }
        txn.commit().unwrap();
        let mut steps = 0;
        loop {
            let txn = db.begin_write().unwrap();
            let more = RunSet::merge_step(&txn, "t", per_block).unwrap();
            txn.commit().unwrap();
            steps += 1;
            if !more {
                break;
            }
        }
        let set = state(&store);
        assert_eq!(set.runs.len(), 1, "{set:?}");
        assert_eq!(set.runs[0].keys, keys);
        assert!(steps > 10, "{steps} steps");
        let txn = db.begin_read().unwrap();
        let table = txn
            .open_table(def(&table_name("t", set.runs[0].id)))
            .unwrap();
        assert_eq!(table.len().unwrap(), keys.div_ceil(per_block as u64));
        // A block holds no more than that: one key more does not fit.
        assert!((per_block + 1) * (2 + KEY) + 1 > BLOCK_BYTES);
    }

    #[test]
    fn clear_drops_every_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let txn = store.db().unwrap().begin_write().unwrap();
        for i in 0..FANOUT as u8 + 1 {
            RunSet::add(&txn, "t", [[i].as_slice()]).unwrap();
        }
        RunSet::merge_step(&txn, "t", 1).unwrap();
        assert!(state_in(&txn).merging());
        clear(&txn, &mut txn.open_table(META).unwrap(), "t").unwrap();
        txn.commit().unwrap();
        assert_eq!(all(&store), (vec![], 0));
        let txn = store.db().unwrap().begin_read().unwrap();
        assert_eq!(
            txn.list_tables()
                .unwrap()
                .filter(|t| is_run_table(t.name()))
                .count(),
            0
        );
    }

    fn state_in(txn: &WriteTransaction) -> RunSet {
        RunSet::load(&txn.open_table(META).unwrap(), "t").unwrap()
    }
}
