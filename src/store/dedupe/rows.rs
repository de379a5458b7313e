//! How the index's fingerprints are laid out in bytes: a run key (fingerprint ++ seq ++
//! check), a commit row of such entries, and the in-memory map the writer stages them in.

use super::super::Result;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The name of the dedupe index's set of sorted runs (in the log's file).
pub const RUNS: &str = "dedupe";

/// The version byte of a commit row of 24-byte pairs (fingerprint ++ seq, no check bits):
/// still read, no longer written.
pub const COMMIT_ROW_V1: u8 = 1;
/// The version byte of a commit row of 32-byte entries (fingerprint ++ seq ++ check).
pub const COMMIT_ROW_V2: u8 = 2;

/// Where a fingerprint is stored: the event's seq, and the id's check bits ([`super::Id`];
/// never 0) when its entry was written with them, [`NO_CHECK`] in entries of older builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub seq: u64,
    pub check: u64,
}

/// [`Owner::check`] of an entry without check bits.
pub const NO_CHECK: u64 = 0;

/// A run key (and an entry of a [`DEDUPE_COMMITS`] row): fingerprint ++ seq ++ check,
/// big-endian, so that runs sort by fingerprint; without check bits, its first 24 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryBytes([u8; 32]);

impl EntryBytes {
    pub fn new(fp: u128, owner: Owner) -> EntryBytes {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(&fp.to_be_bytes());
        k[16..24].copy_from_slice(&owner.seq.to_be_bytes());
        k[24..].copy_from_slice(&owner.check.to_be_bytes());
        EntryBytes(k)
    }

    pub fn as_slice(&self) -> &[u8] {
        let has_check = self.0[24..] != [0; 8];
        &self.0[..if has_check { 32 } else { 24 }]
    }
}

impl AsRef<[u8]> for EntryBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// The smallest run key of `fp`: where a lookup starts.
pub fn lowest_key(fp: u128) -> [u8; 16] {
    fp.to_be_bytes()
}

/// A run key or row entry: 24 bytes (an older build's, no check) or 32.
pub fn split_entry(k: &[u8]) -> Option<(u128, Owner)> {
    let fp = u128::from_be_bytes(k.get(..16)?.try_into().ok()?);
    let seq = u64::from_be_bytes(k.get(16..24)?.try_into().ok()?);
    let check = match k.len() {
        24 => NO_CHECK,
        32 => u64::from_be_bytes(k.get(24..32)?.try_into().ok()?),
        _ => return None,
    };
    Some((fp, Owner { seq, check }))
}

/// The entries of one [`DEDUPE_COMMITS`] row.
pub fn commit_row_entries(row: &[u8]) -> Result<impl Iterator<Item = (u128, Owner)> + '_> {
    let size = match row.split_first() {
        Some((&COMMIT_ROW_V1, pairs)) if pairs.len() % 24 == 0 => 24,
        Some((&COMMIT_ROW_V2, entries)) if entries.len() % 32 == 0 => 32,
        _ => {
            return Err(super::super::Error::Corrupt(
                "undecodable dedupe commit row".into(),
            ));
        }
    };
    Ok(row[1..].chunks_exact(size).filter_map(split_entry))
}

/// Fingerprints are already uniformly random: hashing them again is wasted work.
#[derive(Default)]
pub struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u128(&mut self, k: u128) {
        self.0 = (k as u64) ^ ((k >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub type FpMap = HashMap<u128, Owner, BuildHasherDefault<FpHasher>>;
