//! Decompressing blocks before they are asked for, on a small pool of
//! background threads: the read-ahead of [`ImageFs`] (when block N of a
//! file is read, N+1.. are decompressed beside the payload) and
//! [`ImageFs::prefetch`] (a list of blocks, say a recorded profile, in the
//! order given).
//!
//! - **A hint, never a duty**: a key that names no block, or a block that
//!   fails to decompress, is dropped without a word (the payload's own read
//!   of it reports the failure); the queue is bounded, and keys past the
//!   bound are dropped.
//! - **No block decompressed twice**: a block being decompressed is "in
//!   flight" (see [`InFlight`]); a payload read of it waits for that
//!   instead of decompressing it again beside it.
//! - **Threads start on first use**, never in [`ImageFs::open`]: rfake
//!   opens the image before it forks the server, and threads do not
//!   survive a fork. They hold the image only while they work on a key
//!   (a [`Weak`] reference otherwise), and end when it is dropped.
//!
//! [`ImageFs`]: super::ImageFs
//! [`ImageFs::prefetch`]: super::ImageFs::prefetch

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use super::fs::{BlockKey, ImageFs};

/// The name of the pool's threads: the prefetch profile leaves their
/// reads out of what it records (`cold.rs`).
pub(super) const THREAD_NAME: &str = "rfake-prefetch";

/// Keys waiting at most; more are dropped (a profile of the whole of a
/// large image is 16 GiB of 128 KiB blocks at this bound, more than any
/// block cache holds).
pub(super) const MAX_QUEUED: usize = 1 << 17;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct State {
    keys: VecDeque<BlockKey>,
    queued: HashSet<BlockKey>,
    /// Threads started (they run until `closed`).
    started: usize,
    closed: bool,
}

/// The queue the pool's threads take keys from.
#[derive(Default)]
pub(super) struct Pool {
    state: Mutex<State>,
    wake: Condvar,
}

impl Pool {
    /// Queue `keys` (those not queued already) at the back, or at the
    /// front (read-ahead: wanted sooner than a profile's next key), and
    /// make sure `threads` threads serve `fs`.
    pub(super) fn push(
        self: &Arc<Self>,
        fs: &Weak<ImageFs>,
        threads: usize,
        keys: impl IntoIterator<Item = BlockKey>,
        front: bool,
    ) {
        let mut st = lock(&self.state);
        if st.closed {
            return;
        }
        let mut added = Vec::new();
        for key in keys {
            if st.keys.len() + added.len() >= MAX_QUEUED {
                break;
            }
            if st.queued.insert(key) {
                added.push(key);
            }
        }
        if added.is_empty() {
            return;
        }
        if front {
            for key in added.into_iter().rev() {
                st.keys.push_front(key);
            }
        } else {
            st.keys.extend(added);
        }
        while st.started < threads {
            let pool = Arc::clone(self);
            let fs = fs.clone();
            let spawned = std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || pool.work(&fs));
            if spawned.is_err() {
                // No thread: the payload's reads still decompress what
                // they need; the queue waits for a thread that did start.
                break;
            }
            st.started += 1;
        }
        drop(st);
        self.wake.notify_all();
    }

    /// Stop the threads (the image is going away).
    pub(super) fn close(&self) {
        let mut st = lock(&self.state);
        st.closed = true;
        st.keys.clear();
        st.queued.clear();
        drop(st);
        self.wake.notify_all();
    }

    /// Keys waiting (for tests and counters).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        lock(&self.state).keys.len()
    }

    fn work(&self, fs: &Weak<ImageFs>) {
        loop {
            let key = {
                let mut st = lock(&self.state);
                loop {
                    if st.closed {
                        return;
                    }
                    if let Some(key) = st.keys.pop_front() {
                        st.queued.remove(&key);
                        break key;
                    }
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let Some(fs) = fs.upgrade() else {
                return;
            };
            fs.warm(key);
        }
    }
}

/// Blocks being decompressed, so that a second reader of one waits for
/// the first instead of decompressing it again.
#[derive(Default)]
pub(super) struct InFlight {
    keys: Mutex<HashSet<BlockKey>>,
    done: Condvar,
}

/// A block this thread decompresses; others wait until it is dropped.
pub(super) struct Claim<'a> {
    flight: &'a InFlight,
    key: BlockKey,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.flight.keys).remove(&self.key);
        self.flight.done.notify_all();
    }
}

impl InFlight {
    /// Claim `key`, or, if another thread holds it, wait until it is done
    /// and return `None` (the block is then in the cache, or failed: the
    /// caller looks again).
    pub(super) fn claim(&self, key: BlockKey) -> Option<Claim<'_>> {
        let mut keys = lock(&self.keys);
        if keys.insert(key) {
            return Some(Claim { flight: self, key });
        }
        while keys.contains(&key) {
            keys = self.done.wait(keys).unwrap_or_else(|e| e.into_inner());
        }
        None
    }
}

/// Threads for a pool on this machine: one per core beyond the first
/// (which the payload needs), at least one, at most four (decompressing
/// 128 KiB blocks takes ~0.3 ms; four threads outrun any single reader).
pub(super) fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_second_claim_waits_for_the_first_and_gets_none() {
        let flight = Arc::new(InFlight::default());
        let released = Arc::new(AtomicBool::new(false));
        let claim = flight.claim((1, 2)).expect("the first claim");
        // Another key is independent.
        assert!(flight.claim((1, 3)).is_some());
        let waiter = {
            let (flight, released) = (flight.clone(), released.clone());
            std::thread::spawn(move || {
                let got = flight.claim((1, 2)).is_some();
                (got, released.load(Ordering::SeqCst))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        released.store(true, Ordering::SeqCst);
        drop(claim);
        assert_eq!(waiter.join().unwrap(), (false, true));
        // Released: claimable again.
        assert!(flight.claim((1, 2)).is_some());
    }

    #[test]
    fn the_queue_is_bounded_deduplicated_and_closed_for_good() {
        let pool = Arc::new(Pool::default());
        // No image: threads would exit at once; start none (0 threads).
        let none = Weak::new();
        pool.push(&none, 0, [(1, 0), (1, 1), (1, 0)], false);
        assert_eq!(pool.waiting(), 2);
        pool.push(&none, 0, (0..MAX_QUEUED as u32 + 10).map(|i| (2, i)), false);
        assert_eq!(pool.waiting(), MAX_QUEUED);
        pool.close();
        assert_eq!(pool.waiting(), 0);
        pool.push(&none, 0, [(3, 0)], true);
        assert_eq!(pool.waiting(), 0);
    }
}
