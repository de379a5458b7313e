//! A simulated disk for redb (a test-only [`StorageBackend`]): it knows which bytes a
//! completed `sync_data` made durable, so a test can cut the power at any write, build the
//! image a real disk could hold afterwards, and inject I/O errors, a full disk or a failed
//! fsync on command.
//!
//! Model (stated so the tests' claims are exact):
//! - `live` is what reads see (the OS page cache); every write lands there.
//! - `durable` is what survives a power cut: a copy of `live` taken by each *successful*
//!   `sync_data`. A failed sync makes nothing durable; its writes stay dirty in `live` and a
//!   later successful sync makes them durable (the page cache keeps dirty pages).
//! - The writes since the last successful sync are logged in order, so a crash image can keep
//!   a prefix of them with the last one torn (a device that writes in order but loses power
//!   mid-sector), in addition to the plain "drop everything unsynced" image.
//! - After [`SimDisk::cut_power`] every operation fails: a dead process observes nothing.

use redb::StorageBackend;
use std::io::{Error, ErrorKind};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct State {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// (offset, bytes) written since the last successful sync; `None` offset = set_len.
    unsynced: Vec<(Option<u64>, Vec<u8>)>,
    /// Mutating operations (write, set_len, sync) so far.
    ops: u64,
    /// The power goes out when `ops` reaches this.
    cut_at: Option<u64>,
    dead: bool,
    fault: Fault,
    faults_injected: u64,
    /// Backends alive (each held by one redb `Database`).
    open_backends: usize,
}

/// An injected fault, active until cleared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Every write fails with EIO.
    WriteError,
    /// Every sync fails with EIO (its writes stay dirty, not durable).
    SyncError,
    /// Growing the storage beyond this many bytes fails with ENOSPC.
    Full(u64),
}

#[derive(Debug, Clone, Default)]
pub struct SimDisk(Arc<Mutex<State>>);

/// How a crash image treats the writes after the last successful sync.
#[derive(Debug, Clone, Copy)]
pub enum Image {
    /// All of them are lost.
    Drop,
    /// The first `keep` of them reached the disk, and `torn_bytes` of the next one.
    Torn { keep: usize, torn_bytes: usize },
}

impl SimDisk {
    /// A disk holding `image` as both its live and durable contents.
    pub fn with_image(image: Vec<u8>) -> SimDisk {
        SimDisk(Arc::new(Mutex::new(State {
            live: image.clone(),
            durable: image,
            ..State::default()
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A backend on this disk, for `Builder::create_with_backend`.
    /// A backend over this disk. Like the lock on a real file, only one may be alive at a
    /// time: while the last one's `Database` lives, this refuses with `DatabaseAlreadyOpen`
    /// (so a reopen waits for readers of the old handle, as it does on a file).
    pub fn backend(&self) -> Result<SimBackend, redb::DatabaseError> {
        let mut s = self.state();
        if s.open_backends > 0 {
            return Err(redb::DatabaseError::DatabaseAlreadyOpen);
        }
        s.open_backends += 1;
        Ok(SimBackend(self.clone()))
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state().ops
    }

    /// Current length of the storage as redb sees it.
    pub fn backend_len(&self) -> u64 {
        self.state().live.len() as u64
    }

    pub fn faults_injected(&self) -> u64 {
        self.state().faults_injected
    }

    /// Cuts the power when the `n`th mutating operation from now is attempted (0 = at once).
    pub fn cut_power_after(&self, n: u64) {
        let mut s = self.state();
        s.cut_at = Some(s.ops + n);
        if n == 0 {
            s.dead = true;
        }
    }

    pub fn is_dead(&self) -> bool {
        self.state().dead
    }

    /// Writes since the last successful sync (candidates for a torn image).
    pub fn unsynced_writes(&self) -> usize {
        self.state().unsynced.len()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }

    /// What a disk could hold after the power cut.
    pub fn crash_image(&self, how: Image) -> Vec<u8> {
        let s = self.state();
        let mut image = s.durable.clone();
        if let Image::Torn { keep, torn_bytes } = how {
            for (offset, data) in s.unsynced.iter().take(keep) {
                apply(&mut image, *offset, data);
            }
            if let Some((Some(offset), data)) = s.unsynced.get(keep) {
                apply(
                    &mut image,
                    Some(*offset),
                    &data[..torn_bytes.min(data.len())],
                );
            }
        }
        image
    }

    /// Counts a mutating operation; fails it when the power is (now) out.
    fn step(s: &mut State) -> Result<(), Error> {
        if s.dead {
            return Err(Error::other("power cut"));
        }
        if s.cut_at.is_some_and(|c| s.ops >= c) {
            s.dead = true;
            return Err(Error::other("power cut"));
        }
        s.ops += 1;
        Ok(())
    }
}

/// Applies one logged operation (a write, or a `set_len` when `offset` is `None`).
fn apply(image: &mut Vec<u8>, offset: Option<u64>, data: &[u8]) {
    match offset {
        None => {
            let len = u64::from_le_bytes(data.try_into().expect("8 bytes"));
            image.resize(len as usize, 0);
        }
        Some(off) => {
            let off = off as usize;
            if image.len() < off + data.len() {
                image.resize(off + data.len(), 0);
            }
            image[off..off + data.len()].copy_from_slice(data);
        }
    }
}

/// The [`StorageBackend`] over a [`SimDisk`]. It implements no locks (redb then runs in its
/// exclusive-writer mode, which is how inlet uses it anyway).
#[derive(Debug)]
pub struct SimBackend(SimDisk);

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.0.state().open_backends -= 1;
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, Error> {
        let s = self.0.state();
        if s.dead {
            return Err(Error::other("power cut"));
        }
        Ok(s.live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), Error> {
        let s = self.0.state();
        if s.dead {
            return Err(Error::other("power cut"));
        }
        let off = offset as usize;
        if off + out.len() > s.live.len() {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        out.copy_from_slice(&s.live[off..off + out.len()]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        let mut s = self.0.state();
        SimDisk::step(&mut s)?;
        if let Fault::Full(limit) = s.fault
            && len > limit
            && len > s.live.len() as u64
        {
            s.faults_injected += 1;
            return Err(ErrorKind::StorageFull.into());
        }
        s.live.resize(len as usize, 0);
        s.unsynced.push((None, len.to_le_bytes().to_vec()));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), Error> {
        let mut s = self.0.state();
        SimDisk::step(&mut s)?;
        if s.fault == Fault::SyncError {
            s.faults_injected += 1;
            return Err(Error::other("injected fsync failure"));
        }
        let log = std::mem::take(&mut s.unsynced);
        for (offset, data) in &log {
            apply(&mut s.durable, *offset, data);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let mut s = self.0.state();
        SimDisk::step(&mut s)?;
        let end = offset as usize + data.len();
        match s.fault {
            Fault::WriteError => {
                s.faults_injected += 1;
                return Err(Error::other("injected write error"));
            }
            Fault::Full(limit) if end as u64 > limit && end > s.live.len() => {
                s.faults_injected += 1;
                return Err(ErrorKind::StorageFull.into());
            }
            _ => {}
        }
        if s.live.len() < end {
            s.live.resize(end, 0);
        }
        s.live[offset as usize..end].copy_from_slice(data);
        s.unsynced.push((Some(offset), data.to_vec()));
        Ok(())
    }
}
