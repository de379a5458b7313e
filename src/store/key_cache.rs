//! Authenticated keys remembered between requests, so that the hot path does not open four
//! tables and decode three JSON records for every request.
//!
//! An entry is only used while the configuration generation it was loaded under is still
//! current. The writer thread bumps the generation after every job it runs (all admin writes
//! of a serving process are such jobs) and before that job's caller is answered, so a revoked
//! key is refused from the very next request on. Only successful lookups are remembered.

use super::read::KeyInfo;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most keys remembered; past it the cache starts over (keys are few in practice).
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
pub struct KeyCache {
    /// SHA-256 of the presented key → (generation, key).
    entries: Mutex<HashMap<[u8; 32], (u64, KeyInfo)>>,
}

impl KeyCache {
    /// The key whose SHA-256 is `hash` under `generation`, or what `load` finds (remembered
    /// when found).
    pub fn get_or_load<E>(
        &self,
        generation: u64,
        hash: [u8; 32],
        load: impl FnOnce() -> Result<Option<KeyInfo>, E>,
    ) -> Result<Option<KeyInfo>, E> {
        if let Some((g, key)) = self.lock().get(&hash)
            && *g == generation
        {
            return Ok(Some(key.clone()));
        }
        // `generation` was read before loading: if config changes meanwhile, the entry is
        // already stale and the next request loads again.
        let found = load()?;
        if let Some(key) = &found {
            let mut entries = self.lock();
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(hash, (generation, key.clone()));
        }
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (u64, KeyInfo)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> KeyInfo {
        KeyInfo {
            key_id: id,
            app_id: 1,
            app: "a".into(),
            tenant_id: 1,
            tenant: "t".into(),
            allowed_events: Vec::new(),
            rate_limit: None,
        }
    }

    #[test]
    fn entries_live_only_within_their_generation() {
        let c = KeyCache::default();
        let h = [7u8; 32];
        let got = c.get_or_load(1, h, || Ok::<_, ()>(Some(key(1)))).unwrap();
        assert_eq!(got.unwrap().key_id, 1);
        // Same generation: no load.
        let got = c.get_or_load(1, h, || -> Result<_, ()> { panic!("loaded") });
        assert_eq!(got.unwrap().unwrap().key_id, 1);
        // New generation (say the key was revoked): loads again, and a miss is not kept.
        assert!(c.get_or_load(2, h, || Ok::<_, ()>(None)).unwrap().is_none());
        assert!(c.get_or_load(2, h, || Ok::<_, ()>(None)).unwrap().is_none());
    }
}
