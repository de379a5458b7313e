//! How the index's fingerprints are laid out in bytes: a run key (fingerprint ++ seq), a
//! commit row of such pairs, and the in-memory map the writer stages them in.

use super::super::Result;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The name of the dedupe index's set of sorted runs (in the log's file).
pub const RUNS: &str = "dedupe";

/// The version byte a commit row starts with.
pub const COMMIT_ROW_V1: u8 = 1;

/// A run key (and a pair of a [`DEDUPE_COMMITS`] row): fingerprint ++ seq, big-endian, so
/// that runs sort by fingerprint.
pub fn pair_bytes(fp: u128, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&fp.to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn split_pair(k: &[u8]) -> Option<(u128, u64)> {
    let fp = u128::from_be_bytes(k.get(..16)?.try_into().ok()?);
    let seq = u64::from_be_bytes(k.get(16..24)?.try_into().ok()?);
    (k.len() == 24).then_some((fp, seq))
}

/// The (fingerprint, seq) pairs of one [`DEDUPE_COMMITS`] row.
pub fn commit_row_pairs(row: &[u8]) -> Result<impl Iterator<Item = (u128, u64)> + '_> {
    match row.split_first() {
        Some((&COMMIT_ROW_V1, pairs)) if pairs.len() % 24 == 0 => {
            Ok(pairs.chunks_exact(24).filter_map(split_pair))
        }
        _ => Err(super::super::Error::Corrupt(
            "undecodable dedupe commit row".into(),
        )),
    }
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

pub type FpMap = HashMap<u128, u64, BuildHasherDefault<FpHasher>>;
