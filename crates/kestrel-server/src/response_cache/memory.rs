//! The in-process store (`--response-cache memory`): least-recently-used entries go first once
//! the entries' bytes would pass `--response-cache-size`, and an entry past its TTL is never
//! returned. One mutex guards it; every operation is a hash lookup and a few ordered-map
//! updates, so it is held for microseconds.
//!
//! The bound counts each entry's value, its key and [`ENTRY_OVERHEAD`] for the map nodes, so
//! the process's memory for the cache stays within a small factor of the flag. Local to one
//! process: replicas that should share answers use Redis.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::key::CacheKey;

/// Bytes counted per entry beyond its value and key: the hash-map slot and the order-map node.
pub const ENTRY_OVERHEAD: usize = 96;

/// What a store refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub entry_bytes: usize,
    pub max_bytes: usize,
}

pub struct MemoryStore {
    max_bytes: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<CacheKey, Slot>,
    /// Use order: the oldest tick is the least recently used entry.
    order: BTreeMap<u64, CacheKey>,
    next_tick: u64,
    bytes: usize,
}

struct Slot {
    value: Arc<[u8]>,
    expires: Instant,
    tick: u64,
}

fn entry_bytes(value_len: usize) -> usize {
    value_len + std::mem::size_of::<CacheKey>() + ENTRY_OVERHEAD
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock leaves the maps consistent (every update below is
        // completed before anything that can panic), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value under `key` if it has not expired at `now`; marks it most recently used.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<[u8]>> {
        let mut lru = self.lock();
        let lru = &mut *lru;
        let slot = lru.entries.get_mut(key)?;
        if slot.expires <= now {
            lru.remove(key);
            return None;
        }
        lru.order.remove(&slot.tick);
        slot.tick = lru.next_tick;
        lru.next_tick += 1;
        lru.order.insert(slot.tick, *key);
        Some(slot.value.clone())
    }

    /// Stores `value` under `key` until `now + ttl`, evicting expired entries and then the least
    /// recently used ones until it fits. An entry larger than the whole bound is refused.
    pub fn put(
        &self,
        key: CacheKey,
        value: &[u8],
        ttl: Duration,
        now: Instant,
    ) -> Result<(), TooLarge> {
        let size = entry_bytes(value.len());
        if size > self.max_bytes {
            return Err(TooLarge {
                entry_bytes: size,
                max_bytes: self.max_bytes,
            });
        }
        let mut lru = self.lock();
        lru.remove(&key);
        if lru.bytes + size > self.max_bytes {
            lru.remove_expired(now);
        }
        while lru.bytes + size > self.max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.remove(&oldest);
        }
        let tick = lru.next_tick;
        lru.next_tick += 1;
        lru.order.insert(tick, key);
        lru.entries.insert(
            key,
            Slot {
                value: value.into(),
                expires: now + ttl,
                tick,
            },
        );
        lru.bytes += size;
        Ok(())
    }

    /// Bytes held, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Lru {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.entries.remove(key) {
            self.order.remove(&slot.tick);
            self.bytes -= entry_bytes(slot.value.len());
        }
    }

    fn remove_expired(&mut self, now: Instant) {
        let expired: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn hit_miss_and_ttl() {
        let store = MemoryStore::new(1 << 20);
        let t0 = Instant::now();
        assert!(store.get(&key(1), t0).is_none());
        store
            .put(key(1), b"answer", Duration::from_secs(10), t0)
            .unwrap();
        assert_eq!(&*store.get(&key(1), t0).unwrap(), b"answer");
        // Still there just before the TTL, gone at it, and its bytes are given back.
        let almost = t0 + Duration::from_secs(10) - Duration::from_nanos(1);
        assert!(store.get(&key(1), almost).is_some());
        assert!(store.get(&key(1), t0 + Duration::from_secs(10)).is_none());
        assert_eq!(store.bytes(), 0);
        assert!(store.is_empty());
        // A new value replaces the old one and restarts its TTL.
        store
            .put(key(2), b"one", Duration::from_secs(10), t0)
            .unwrap();
        let later = t0 + Duration::from_secs(8);
        store
            .put(key(2), b"two!", Duration::from_secs(10), later)
            .unwrap();
        assert_eq!(
            &*store.get(&key(2), t0 + Duration::from_secs(15)).unwrap(),
            b"two!"
        );
        assert_eq!(store.bytes(), entry_bytes(4));
    }

    #[test]
    fn the_byte_bound_evicts_least_recently_used_first() {
        let value = [7u8; 100];
        let one = entry_bytes(value.len());
        // Room for exactly three entries.
        let store = MemoryStore::new(3 * one + one / 2);
        let t = Instant::now();
        for i in 0..3 {
            store.put(key(i), &value, HOUR, t).unwrap();
        }
        assert_eq!(store.len(), 3);
        // Using 0 makes 1 the least recently used: the fourth entry evicts it.
        assert!(store.get(&key(0), t).is_some());
        store.put(key(3), &value, HOUR, t).unwrap();
        assert!(
            store.get(&key(1), t).is_none(),
            "1 was the least recently used"
        );
        for i in [0, 2, 3] {
            assert!(store.get(&key(i), t).is_some(), "{i} was evicted");
        }
        // However many entries arrive, the bound holds.
        for i in 10..200 {
            store
                .put(key(i), &value[..(i as usize % 100)], HOUR, t)
                .unwrap();
            assert!(
                store.bytes() <= store.max_bytes(),
                "{} bytes",
                store.bytes()
            );
        }
        // The newest entry is always kept.
        assert!(store.get(&key(199), t).is_some());
    }

    #[test]
    fn expired_entries_go_before_live_ones() {
        let value = [1u8; 50];
        let one = entry_bytes(value.len());
        let store = MemoryStore::new(2 * one);
        let t = Instant::now();
        store.put(key(1), &value, HOUR, t).unwrap();
        store
            .put(key(2), &value, Duration::from_secs(1), t)
            .unwrap();
        // 1 is the least recently used, but 2 has expired: 2 makes room.
        let later = t + Duration::from_secs(2);
        store.put(key(3), &value, HOUR, later).unwrap();
        assert!(store.get(&key(1), later).is_some());
        assert!(store.get(&key(3), later).is_some());
        assert!(store.get(&key(2), later).is_none());
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_refused() {
        let store = MemoryStore::new(1000);
        let t = Instant::now();
        store.put(key(1), &[0; 10], HOUR, t).unwrap();
        assert_eq!(
            store.put(key(2), &[0; 1000], HOUR, t),
            Err(TooLarge {
                entry_bytes: entry_bytes(1000),
                max_bytes: 1000
            })
        );
        // Nothing was evicted for it.
        assert!(store.get(&key(1), t).is_some());
    }
}
