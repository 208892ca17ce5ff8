//! The pool of KV cache blocks, a port of vLLM v1's `BlockPool` / `FreeKVCacheBlockQueue`.
//!
//! Every block is either *used* (`ref_count > 0`, owned by one or more sequences) or *free*
//! (`ref_count == 0`, in the free queue). A free block may still hold a cached prefix (it has a
//! hash): it stays findable through [`BlockPool::cached_block`] until [`BlockPool::allocate`]
//! takes it from the front of the queue, which evicts its hash. Freed blocks go to the back, so
//! the queue is an LRU of cached prefixes. The queue is a doubly linked list over block ids, so a
//! cache hit on a free block leaves the queue in O(1).
//!
//! A cached block is registered with its whole [`BlockKey`] (parent key, tokens, salt), and a
//! lookup returns it only when the looked-up key is equal in full, not just its hash: a hit
//! requires equal tokens and an equal salt by construction, so even a hash collision could not
//! hand one request another's KV. The parent is compared by its SHA-256 key, which covers the
//! whole prefix.
//!
//! Cached blocks are also indexed by their parent, salt and first token, so that a sequence
//! whose next block differs from a cached one after a few tokens can still reuse that block's
//! leading tokens ([`BlockPool::partial_match`]; their KV is copied, see `kv_cache_manager.rs`).
//!
//! Invariants (checked by [`BlockPool::check_invariants`] and the property tests):
//! free + used = total; a block is in the free queue iff its ref count is 0; every hash in the
//! cache map points at a block carrying that hash; the child index lists exactly the cached
//! blocks, each under its own key's parent, salt and first token.

use std::collections::HashMap;

pub use crate::block_hash::{BlockHash, CacheSalt};

/// Index of one block in the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// Everything a full block's KV depends on: the key of the block before it (which covers the
/// whole prefix), its own token ids, and the request's salt (first block only, as in vLLM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockKey {
    pub parent: Option<BlockHash>,
    pub tokens: Vec<u32>,
    pub salt: Option<CacheSalt>,
}

impl BlockKey {
    pub fn hash(&self) -> BlockHash {
        BlockHash::chain(self.parent, &self.tokens, self.salt.as_ref())
    }

    /// Whether this key is `(parent, tokens, salt)`.
    fn matches(&self, parent: Option<BlockHash>, tokens: &[u32], salt: Option<&CacheSalt>) -> bool {
        self.parent == parent && self.tokens == tokens && self.salt.as_ref() == salt
    }
}

const NONE: u32 = u32::MAX;

/// Where a cached block is listed in the child index: what its key starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ChildKey {
    parent: Option<BlockHash>,
    salt: Option<CacheSalt>,
    first_token: u32,
}

impl ChildKey {
    fn of(key: &BlockKey) -> Option<Self> {
        Some(Self {
            parent: key.parent,
            salt: key.salt,
            first_token: *key.tokens.first()?,
        })
    }
}

#[derive(Clone, Debug)]
struct BlockMeta {
    ref_count: u32,
    /// Set while the block is registered in the prefix cache (`hash` is `key.hash()`).
    hash: Option<BlockHash>,
    key: Option<BlockKey>,
    /// Free-queue links (`NONE` at the ends or when not queued).
    prev: u32,
    next: u32,
}

#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<BlockMeta>,
    head: u32,
    tail: u32,
    num_free: usize,
    enable_caching: bool,
    cached: HashMap<BlockHash, BlockId>,
    /// Cached blocks by the start of their key (for [`Self::partial_match`]).
    children: HashMap<ChildKey, Vec<BlockId>>,
}

impl BlockPool {
    pub fn new(num_blocks: usize, enable_caching: bool) -> Self {
        assert!(num_blocks < NONE as usize, "block ids are u32");
        let n = num_blocks as u32;
        let blocks = (0..n)
            .map(|i| BlockMeta {
                ref_count: 0,
                hash: None,
                key: None,
                prev: if i == 0 { NONE } else { i - 1 },
                next: if i + 1 == n { NONE } else { i + 1 },
            })
            .collect();
        Self {
            blocks,
            head: if n == 0 { NONE } else { 0 },
            tail: if n == 0 { NONE } else { n - 1 },
            num_free: num_blocks,
            enable_caching,
            cached: HashMap::new(),
            children: HashMap::new(),
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with ref count 0 (some may hold cached prefixes).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Fraction of blocks in use.
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            0.0
        } else {
            1.0 - self.num_free as f64 / self.blocks.len() as f64
        }
    }

    pub fn ref_count(&self, b: BlockId) -> u32 {
        self.blocks[b.0 as usize].ref_count
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.blocks[i as usize].prev, self.blocks[i as usize].next);
        if prev == NONE {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        self.blocks[i as usize].prev = NONE;
        self.blocks[i as usize].next = NONE;
        self.num_free -= 1;
    }

    fn push_back(&mut self, i: u32) {
        self.blocks[i as usize].prev = self.tail;
        self.blocks[i as usize].next = NONE;
        if self.tail == NONE {
            self.head = i;
        } else {
            self.blocks[self.tail as usize].next = i;
        }
        self.tail = i;
        self.num_free += 1;
    }

    /// Takes `n` blocks from the front of the free queue (evicting their cached hashes), each with
    /// ref count 1; `None` (and nothing taken) when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.head;
            self.unlink(i);
            let meta = &mut self.blocks[i as usize];
            meta.ref_count = 1;
            let key = meta.key.take();
            if let Some(h) = meta.hash.take() {
                if self.cached.get(&h) == Some(&BlockId(i)) {
                    self.cached.remove(&h);
                }
            }
            if let Some(ck) = key.as_ref().and_then(ChildKey::of) {
                if let Some(list) = self.children.get_mut(&ck) {
                    list.retain(|&b| b != BlockId(i));
                    if list.is_empty() {
                        self.children.remove(&ck);
                    }
                }
            }
            out.push(BlockId(i));
        }
        Some(out)
    }

    /// Adds a reference to each block (a prefix-cache hit); a free one leaves the free queue.
    pub fn touch(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            if self.blocks[b.0 as usize].ref_count == 0 {
                self.unlink(b.0);
            }
            self.blocks[b.0 as usize].ref_count += 1;
        }
    }

    /// Drops one reference from each block, in order; blocks reaching 0 join the back of the
    /// free queue (so pass a sequence's blocks tail first: its last blocks are evicted first).
    pub fn free(&mut self, blocks: impl IntoIterator<Item = BlockId>) {
        for b in blocks {
            let meta = &mut self.blocks[b.0 as usize];
            assert!(meta.ref_count > 0, "double free of block {}", b.0);
            meta.ref_count -= 1;
            if meta.ref_count == 0 {
                self.push_back(b.0);
            }
        }
    }

    /// The cached block whose key is `hash` and whose registered key is exactly
    /// `(parent, tokens, salt)`; a block found under `hash` with another key is a miss.
    pub fn cached_block(
        &self,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[u32],
        salt: Option<&CacheSalt>,
    ) -> Option<BlockId> {
        if !self.enable_caching {
            return None;
        }
        let id = *self.cached.get(&hash)?;
        let key = self.blocks[id.0 as usize].key.as_ref()?;
        key.matches(parent, tokens, salt).then_some(id)
    }

    /// Registers a full, used block under `hash`, the hash of `key`. If another block already
    /// holds this hash, that one stays the cached copy and `block` is left unhashed.
    pub fn cache_block(&mut self, block: BlockId, hash: BlockHash, key: BlockKey) {
        if !self.enable_caching || self.blocks[block.0 as usize].hash.is_some() {
            return;
        }
        debug_assert_eq!(
            hash,
            key.hash(),
            "a block is registered under its key's hash"
        );
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(hash) {
            e.insert(block);
            if let Some(ck) = ChildKey::of(&key) {
                self.children.entry(ck).or_default().push(block);
            }
            let meta = &mut self.blocks[block.0 as usize];
            meta.hash = Some(hash);
            meta.key = Some(key);
        }
    }

    /// The cached block after `parent` (under `salt`, first block only) whose tokens share the
    /// longest run with the start of `tokens`, and that run's length (at least 1, at most
    /// `tokens.len()`); `None` when no cached block starts with `tokens[0]`. Every token of
    /// the run is compared, so the block's first `len` slots hold exactly the KV that `tokens`
    /// would compute after that prefix.
    pub fn partial_match(
        &self,
        parent: Option<BlockHash>,
        salt: Option<&CacheSalt>,
        tokens: &[u32],
    ) -> Option<(BlockId, usize)> {
        if !self.enable_caching {
            return None;
        }
        let ck = ChildKey {
            parent,
            salt: salt.copied(),
            first_token: *tokens.first()?,
        };
        let mut best: Option<(BlockId, usize)> = None;
        for &b in self.children.get(&ck)? {
            let key = self.blocks[b.0 as usize]
                .key
                .as_ref()
                .expect("indexed blocks are cached");
            let len = key
                .tokens
                .iter()
                .zip(tokens)
                .take_while(|(a, b)| a == b)
                .count();
            if best.is_none_or(|(_, l)| len > l) {
                best = Some((b, len));
            }
        }
        best
    }

    /// Panics if an invariant is broken (tests and debug checks).
    pub fn check_invariants(&self) {
        let mut queued = vec![false; self.blocks.len()];
        let mut i = self.head;
        let mut prev = NONE;
        let mut n = 0;
        while i != NONE {
            assert!(!queued[i as usize], "block {i} queued twice");
            queued[i as usize] = true;
            assert_eq!(
                self.blocks[i as usize].prev, prev,
                "broken back link at {i}"
            );
            prev = i;
            i = self.blocks[i as usize].next;
            n += 1;
        }
        assert_eq!(self.tail, prev, "tail is not the last queued block");
        assert_eq!(n, self.num_free, "free count disagrees with the queue");
        let used = self.blocks.iter().filter(|m| m.ref_count > 0).count();
        assert_eq!(n + used, self.blocks.len(), "free + used != total");
        for (b, m) in self.blocks.iter().enumerate() {
            assert_eq!(
                queued[b],
                m.ref_count == 0,
                "block {b}: queued iff ref count 0"
            );
        }
        for (h, b) in &self.cached {
            assert_eq!(
                self.blocks[b.0 as usize].hash,
                Some(*h),
                "cache map points at a block without its hash"
            );
        }
        for (b, m) in self.blocks.iter().enumerate() {
            assert_eq!(
                m.hash.is_some(),
                m.key.is_some(),
                "block {b}: a hash without its key"
            );
        }
        let mut indexed = 0;
        for (ck, list) in &self.children {
            assert!(!list.is_empty(), "an empty child list is kept");
            for b in list {
                let key = self.blocks[b.0 as usize].key.as_ref();
                assert_eq!(
                    key.and_then(ChildKey::of).as_ref(),
                    Some(ck),
                    "block {}: indexed under another key",
                    b.0
                );
                indexed += 1;
            }
        }
        let keyed = self
            .blocks
            .iter()
            .filter(|m| m.key.as_ref().is_some_and(|k| !k.tokens.is_empty()))
            .count();
        assert_eq!(
            indexed, keyed,
            "the child index lists every cached block once"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(tokens: &[u32]) -> (BlockHash, BlockKey) {
        let key = BlockKey {
            parent: None,
            tokens: tokens.to_vec(),
            salt: None,
        };
        (key.hash(), key)
    }

    #[test]
    fn freed_cached_blocks_are_reused_lru() {
        let mut pool = BlockPool::new(4, true);
        let a = pool.allocate(2).unwrap();
        let (h, k) = key(&[1, 2]);
        pool.cache_block(a[0], h, k);
        pool.free(a.iter().rev().copied());
        assert_eq!(pool.num_free(), 4);
        let hit = |pool: &BlockPool| pool.cached_block(h, None, &[1, 2], None);
        assert_eq!(hit(&pool), Some(a[0]));
        pool.touch(&[a[0]]);
        assert_eq!(pool.num_free(), 3);
        pool.free([a[0]]);
        // 2 never-used blocks come first, then a[1], then the cached a[0].
        let b = pool.allocate(3).unwrap();
        assert!(!b.contains(&a[0]));
        assert_eq!(hit(&pool), Some(a[0]));
        let c = pool.allocate(1).unwrap();
        assert_eq!(c, vec![a[0]]);
        assert_eq!(hit(&pool), None, "reuse evicts the hash");
        assert!(pool.allocate(1).is_none());
        pool.check_invariants();
    }

    /// A hit needs the whole key, not the hash: a block registered under some hash is not
    /// returned for other tokens, another salt or another parent under that same hash (what a
    /// hash collision would look like; with the 64-bit SipHash keys this was a hit).
    #[test]
    fn a_hit_requires_equal_tokens_salt_and_parent_even_under_a_colliding_hash() {
        let mut pool = BlockPool::new(2, true);
        let a = pool.allocate(1).unwrap()[0];
        let salt = CacheSalt::new("tenant-a");
        let parent = BlockHash::chain(None, &[7, 7], None);
        let registered = BlockKey {
            parent: Some(parent),
            tokens: vec![1, 2, 3, 4],
            salt: Some(salt),
        };
        let h = registered.hash();
        pool.cache_block(a, h, registered);
        assert_eq!(
            pool.cached_block(h, Some(parent), &[1, 2, 3, 4], Some(&salt)),
            Some(a)
        );
        // Same (forged) hash, anything else different: a miss.
        assert_eq!(
            pool.cached_block(h, Some(parent), &[1, 2, 3, 5], Some(&salt)),
            None
        );
        assert_eq!(
            pool.cached_block(h, Some(parent), &[1, 2, 3], Some(&salt)),
            None
        );
        assert_eq!(
            pool.cached_block(h, Some(parent), &[1, 2, 3, 4], None),
            None
        );
        let other_salt = CacheSalt::new("tenant-b");
        assert_eq!(
            pool.cached_block(h, Some(parent), &[1, 2, 3, 4], Some(&other_salt)),
            None
        );
        assert_eq!(pool.cached_block(h, None, &[1, 2, 3, 4], Some(&salt)), None);
        pool.check_invariants();
    }

    /// The partial match picks the cached child sharing the longest run of leading tokens,
    /// under the same parent and salt only, and forgets a block once it is reused.
    #[test]
    fn partial_match_finds_the_longest_shared_run_under_the_same_parent_and_salt() {
        let mut pool = BlockPool::new(4, true);
        let parent = Some(BlockHash::chain(None, &[9, 9], None));
        let salt = CacheSalt::new("tenant-a");
        let blocks = pool.allocate(3).unwrap();
        let keys = [
            (parent, vec![1, 2, 3, 4], None),
            (parent, vec![1, 2, 5, 6], None),
            (None, vec![1, 2, 3, 4], Some(salt)),
        ];
        for (&b, (parent, tokens, salt)) in blocks.iter().zip(keys) {
            let key = BlockKey {
                parent,
                tokens,
                salt,
            };
            pool.cache_block(b, key.hash(), key);
        }
        pool.check_invariants();
        assert_eq!(
            pool.partial_match(parent, None, &[1, 2, 3, 7]),
            Some((blocks[0], 3))
        );
        assert_eq!(
            pool.partial_match(parent, None, &[1, 2, 5]),
            Some((blocks[1], 3))
        );
        assert_eq!(
            pool.partial_match(parent, None, &[1, 9]).map(|(_, n)| n),
            Some(1)
        );
        assert_eq!(pool.partial_match(parent, None, &[2, 2, 3]), None);
        assert_eq!(pool.partial_match(None, None, &[1, 2, 3]), None);
        assert_eq!(
            pool.partial_match(None, Some(&salt), &[1, 2, 3]),
            Some((blocks[2], 3))
        );
        assert_eq!(
            pool.partial_match(None, Some(&CacheSalt::new("tenant-b")), &[1, 2, 3]),
            None
        );
        // Freed, the blocks stay findable until reused; reuse evicts them from the index.
        pool.free(blocks.iter().rev().copied());
        assert_eq!(
            pool.partial_match(parent, None, &[1, 2, 3]),
            Some((blocks[0], 3))
        );
        let reused = pool.allocate(4).unwrap();
        assert!(reused.contains(&blocks[0]));
        assert_eq!(pool.partial_match(parent, None, &[1, 2, 3]), None);
        pool.check_invariants();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Allocate(usize),
        /// Free the i-th (mod len) owned list.
        Free(usize),
        /// Share the i-th owned list (a prefix hit).
        Touch(usize),
        /// Cache the first block of the i-th list under the key of one small token.
        Cache(usize, u32),
        /// Look a small token's key up and touch what it finds.
        Hit(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(Op::Allocate),
            any::<usize>().prop_map(Op::Free),
            any::<usize>().prop_map(Op::Touch),
            (any::<usize>(), 0u32..8).prop_map(|(i, t)| Op::Cache(i, t)),
            (0u32..8).prop_map(Op::Hit),
        ]
    }

    proptest! {
        /// The pool never loses or double-frees a block: free + used = total, and every
        /// reference the owners hold is counted exactly once.
        #[test]
        fn never_loses_or_double_frees(ops in proptest::collection::vec(op(), 1..200), caching in any::<bool>()) {
            let total = 12;
            let mut pool = BlockPool::new(total, caching);
            let mut owned: Vec<Vec<BlockId>> = Vec::new();
            for op in ops {
                match op {
                    Op::Allocate(n) => {
                        let free = pool.num_free();
                        match pool.allocate(n) {
                            Some(b) => { prop_assert_eq!(b.len(), n); owned.push(b); }
                            None => prop_assert!(n > free),
                        }
                    }
                    Op::Free(i) if !owned.is_empty() => {
                        let b = owned.swap_remove(i % owned.len());
                        pool.free(b.into_iter().rev());
                    }
                    Op::Touch(i) if !owned.is_empty() => {
                        let b = owned[i % owned.len()].clone();
                        pool.touch(&b);
                        owned.push(b);
                    }
                    Op::Cache(i, t) if !owned.is_empty() => {
                        if let Some(&b) = owned[i % owned.len()].first() {
                            let (h, k) = key(&[t]);
                            pool.cache_block(b, h, k);
                        }
                    }
                    Op::Hit(t) => {
                        let (h, _) = key(&[t]);
                        if let Some(b) = pool.cached_block(h, None, &[t], None) {
                            pool.touch(&[b]);
                            owned.push(vec![b]);
                        }
                    }
                    _ => {}
                }
                pool.check_invariants();
                let mut refs = vec![0u32; total];
                for b in owned.iter().flatten() {
                    refs[b.0 as usize] += 1;
                }
                for (i, &r) in refs.iter().enumerate() {
                    prop_assert_eq!(pool.ref_count(BlockId(i as u32)), r);
                }
            }
            for b in owned.drain(..) {
                pool.free(b.into_iter().rev());
            }
            pool.check_invariants();
            prop_assert_eq!(pool.num_free(), total);
        }
    }
}
