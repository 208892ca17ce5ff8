//! Which KV blocks each sequence owns, and the automatic prefix cache (vLLM v1's
//! `KVCacheManager`). The scheduler asks in tokens ("find my cached prefix", "make room for `n`
//! more tokens", "free me") and never touches a block; the [`BlockPool`] below does the counting.
//!
//! Prefix caching: every *full* block of a sequence is keyed by a chained SHA-256 of its tokens
//! and the sequence's `cache_salt` ([`BlockHash::chain`]; a hit also compares the block's tokens
//! and salt in full, see [`BlockPool::cached_block`]), registered the step its tokens are scheduled (their KV is written in
//! that step's forward, before any later step can read it; within one step every layer writes the
//! whole batch's KV before its attention, so even a hit on a block computed in the same step reads
//! finished values). A new sequence reuses the longest run of cached blocks of its prompt, always
//! leaving at least one token to compute so that the step yields logits. `n > 1` choices of one
//! prompt share its blocks this way; sequences with different salts never share one.
//!
//! Past the last whole block it shares, a sequence also reuses the leading tokens of the cached
//! block that continues the same prefix furthest (SGLang's radix cache reuses single tokens;
//! vLLM's blocks stop at the last full match): prompts that share a 1,000-token system prompt
//! then differ in the middle of a block, and without this each would recompute up to a block
//! of shared tokens. The sequence gets a block of its own and the step that admits it copies the
//! matching tokens' KV into it ([`ComputedBlocks::partial`], `BatchInput::kv_copies`), in every
//! layer after the step's KV writes and before its attention. The source block is pinned (one
//! reference) from the admission until the step is planned, so no sequence scheduled in the
//! same step can be given it and overwrite it before the copy; a later step runs after it.

use std::collections::HashMap;

use crate::block_pool::{BlockHash, BlockId, BlockKey, BlockPool, CacheSalt};
use crate::sequence::SeqId;

/// A run of cached blocks found for a sequence's prefix, not yet referenced.
#[derive(Clone, Debug, Default)]
pub struct ComputedBlocks {
    pub blocks: Vec<BlockId>,
    /// The leading tokens of a cached block that continue the prefix after `blocks`.
    pub partial: Option<PartialHit>,
    /// `blocks.len() * block_size` plus the partial hit's tokens.
    pub num_tokens: usize,
}

/// The first `num_tokens` slots of cached block `src` hold the KV of the sequence's next
/// tokens; they are copied into the sequence's own block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialHit {
    pub src: BlockId,
    pub num_tokens: usize,
}

#[derive(Debug, Default)]
struct SeqBlocks {
    /// The block table, in position order.
    blocks: Vec<BlockId>,
    /// Hashes of the sequence's full blocks computed so far (prefix of the block table).
    hashes: Vec<BlockHash>,
    /// Leading blocks already registered in the prefix cache.
    num_cached: usize,
    /// The salt of the sequence's first block, given to [`KvCacheManager::get_computed_blocks`].
    salt: Option<CacheSalt>,
    /// [`KvCacheManager::get_computed_blocks`] ran for this sequence, so `salt` is known; blocks
    /// of a sequence that skipped it are never registered (no sharing rather than a wrong salt).
    salt_known: bool,
}

#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    enable_caching: bool,
    seqs: HashMap<SeqId, SeqBlocks>,
    /// Sources of partial hits admitted since the last [`Self::release_pinned`], each holding
    /// one reference until its copy has been scheduled behind the step that makes it.
    pinned: Vec<BlockId>,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, enable_caching: bool) -> Self {
        assert!(block_size > 0, "block_size must be positive");
        Self {
            pool: BlockPool::new(num_blocks, enable_caching),
            block_size,
            enable_caching,
            seqs: HashMap::new(),
            pinned: Vec::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    pub fn usage(&self) -> f64 {
        self.pool.usage()
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Extends the sequence's hash chain over its full blocks of `tokens`.
    fn hash_full_blocks(block_size: usize, e: &mut SeqBlocks, tokens: &[u32]) {
        let num_full = tokens.len() / block_size;
        while e.hashes.len() < num_full {
            let i = e.hashes.len();
            let key = Self::key_of(block_size, e, tokens, i);
            e.hashes
                .push(BlockHash::chain(key.parent, key.tokens, key.salt.as_ref()));
        }
    }

    /// The key of full block `i` (its parent's hash must be known: `i <= e.hashes.len()`).
    fn key_of<'t>(block_size: usize, e: &SeqBlocks, tokens: &'t [u32], i: usize) -> KeyRef<'t> {
        KeyRef {
            parent: i.checked_sub(1).map(|p| e.hashes[p]),
            tokens: &tokens[i * block_size..(i + 1) * block_size],
            salt: if i == 0 { e.salt } else { None },
        }
    }

    /// The longest cached prefix of `tokens` (all tokens of a sequence not yet holding blocks),
    /// leaving at least the last token uncomputed. `salt` is the sequence's `cache_salt`: only
    /// blocks cached under the same salt are found, and the sequence's own blocks are cached
    /// under it. Call this before the sequence's first [`Self::allocate_slots`].
    pub fn get_computed_blocks(
        &mut self,
        seq: SeqId,
        tokens: &[u32],
        salt: Option<&CacheSalt>,
    ) -> ComputedBlocks {
        let e = self.seqs.entry(seq).or_default();
        if !e.salt_known {
            e.salt = salt.copied();
            e.salt_known = true;
        }
        debug_assert_eq!(e.salt.as_ref(), salt, "a sequence keeps its salt");
        if !self.enable_caching || tokens.is_empty() {
            return ComputedBlocks::default();
        }
        let bs = self.block_size;
        Self::hash_full_blocks(bs, e, tokens);
        let max_blocks = (tokens.len() - 1) / bs;
        let mut blocks = Vec::new();
        for i in 0..max_blocks.min(e.hashes.len()) {
            let key = Self::key_of(bs, e, tokens, i);
            match self
                .pool
                .cached_block(e.hashes[i], key.parent, key.tokens, key.salt.as_ref())
            {
                Some(b) => blocks.push(b),
                None => break,
            }
        }
        // The next block: the cached one sharing the most leading tokens, last token excluded.
        let i = blocks.len();
        let start = i * bs;
        let usable = (tokens.len() - 1).saturating_sub(start).min(bs);
        let partial = (usable > 0)
            .then(|| {
                let parent = i.checked_sub(1).map(|p| e.hashes[p]);
                let salt = if i == 0 { e.salt } else { None };
                self.pool
                    .partial_match(parent, salt.as_ref(), &tokens[start..start + usable])
            })
            .flatten()
            .map(|(src, num_tokens)| PartialHit { src, num_tokens });
        ComputedBlocks {
            num_tokens: start + partial.map_or(0, |p| p.num_tokens),
            blocks,
            partial,
        }
    }

    /// Drops the pins of the partial hits admitted so far: call it once the step that copies
    /// from them is planned (a step runs after the ones planned before it, so blocks handed
    /// out from now on are written after those copies).
    pub fn release_pinned(&mut self) {
        self.pool.free(self.pinned.drain(..));
    }

    /// Makes room for `num_new_tokens` more tokens of `seq` after `num_computed_tokens`
    /// (counting `computed`, a prefix hit from [`Self::get_computed_blocks`] when the sequence
    /// holds no blocks yet). `tokens` are all the sequence's known tokens (prompt + output);
    /// the new tokens may run past them by tokens still being sampled, whose blocks are
    /// registered in the cache by a later call, once their ids are known.
    /// Returns false, changing nothing, when the free blocks do not suffice.
    pub fn allocate_slots(
        &mut self,
        seq: SeqId,
        tokens: &[u32],
        num_computed_tokens: usize,
        num_new_tokens: usize,
        computed: &ComputedBlocks,
    ) -> bool {
        let bs = self.block_size;
        let end = num_computed_tokens + num_new_tokens;
        let e = self.seqs.entry(seq).or_default();
        let num_needed = end.div_ceil(bs);
        let num_have = e.blocks.len() + computed.blocks.len();
        let num_to_allocate = num_needed.saturating_sub(num_have);
        // Touching a free cached block takes it out of the free queue too.
        let copy_source = computed.partial.map(|p| p.src);
        let num_evictable_hits = computed
            .blocks
            .iter()
            .chain(&copy_source)
            .filter(|&&b| self.pool.ref_count(b) == 0)
            .count();
        if num_to_allocate + num_evictable_hits > self.pool.num_free() {
            return false;
        }
        self.pool.touch(&computed.blocks);
        if let Some(src) = copy_source {
            self.pool.touch(&[src]);
            self.pinned.push(src);
        }
        e.blocks.extend_from_slice(&computed.blocks);
        e.blocks.extend(
            self.pool
                .allocate(num_to_allocate)
                .expect("checked free blocks above"),
        );
        if self.enable_caching && e.salt_known {
            // Register the blocks this step fills completely, as far as their ids are known.
            let num_full = end.min(tokens.len()) / bs;
            Self::hash_full_blocks(bs, e, &tokens[..num_full * bs]);
            for i in e.num_cached..num_full {
                let key = Self::key_of(bs, e, tokens, i);
                let key = BlockKey {
                    parent: key.parent,
                    tokens: key.tokens.to_vec(),
                    salt: key.salt,
                };
                self.pool.cache_block(e.blocks[i], e.hashes[i], key);
            }
            e.num_cached = e.num_cached.max(num_full);
        }
        true
    }

    /// The sequence's block table.
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.seqs.get(&seq).map_or(&[], |e| &e.blocks)
    }

    /// Keeps only the blocks that hold the first `num_tokens` positions of `seq`, freeing the
    /// rest, last first (speculative decoding: the blocks of rejected drafts). Blocks registered
    /// in the prefix cache hold known tokens only, which are always kept.
    pub fn truncate(&mut self, seq: SeqId, num_tokens: usize) {
        let bs = self.block_size;
        if let Some(e) = self.seqs.get_mut(&seq) {
            let keep = num_tokens.div_ceil(bs);
            if e.blocks.len() > keep {
                debug_assert!(e.num_cached <= keep, "a cached block is never truncated");
                self.pool.free(e.blocks.drain(keep..).rev());
                e.hashes.truncate(keep);
            }
        }
    }

    /// Releases every block of `seq`, last block first (so that its tail is evicted first and
    /// its prefix stays cached longest).
    pub fn free(&mut self, seq: SeqId) {
        if let Some(e) = self.seqs.remove(&seq) {
            self.pool.free(e.blocks.into_iter().rev());
        }
    }
}

/// A block's key, borrowing its tokens from the sequence.
struct KeyRef<'t> {
    parent: Option<BlockHash>,
    tokens: &'t [u32],
    salt: Option<CacheSalt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_hits_and_leaves_one_token() {
        let mut kv = KvCacheManager::new(16, 4, true);
        let prompt: Vec<u32> = (0..10).collect();
        let (a, b, c) = (SeqId(0), SeqId(1), SeqId(2));
        let hit = kv.get_computed_blocks(a, &prompt, None);
        assert_eq!(hit.num_tokens, 0);
        assert!(kv.allocate_slots(a, &prompt, 0, 10, &hit));
        assert_eq!(kv.block_table(a).len(), 3);
        // Same prompt: the two full blocks are shared.
        let hit = kv.get_computed_blocks(b, &prompt, None);
        assert_eq!(hit.num_tokens, 8);
        assert!(kv.allocate_slots(b, &prompt, 8, 2, &hit));
        assert_eq!(kv.block_table(b)[..2], kv.block_table(a)[..2]);
        assert_eq!(kv.num_free_blocks(), 16 - 4);
        // A prompt of exactly two blocks can reuse only one whole: its last token must be
        // computed; the other three of the second block come from a partial hit.
        let hit = kv.get_computed_blocks(c, &prompt[..8], None);
        assert_eq!(hit.blocks.len(), 1);
        assert_eq!(hit.num_tokens, 7);
        kv.free(a);
        kv.free(b);
        kv.free(c);
        assert_eq!(kv.num_free_blocks(), 16);
        // Freed blocks stay cached.
        let hit = kv.get_computed_blocks(SeqId(3), &prompt, None);
        assert_eq!(hit.num_tokens, 8);
        kv.pool().check_invariants();
    }

    /// A prompt that leaves a cached prefix mid-block reuses the block's matching tokens: its
    /// own block is the copy's destination, and the source holds a pin until the step is planned.
    #[test]
    fn a_prompt_diverging_mid_block_reuses_the_matching_tokens_of_that_block() {
        let mut kv = KvCacheManager::new(6, 4, true);
        let a: Vec<u32> = (0..10).collect();
        let hit = kv.get_computed_blocks(SeqId(0), &a, None);
        assert!(kv.allocate_slots(SeqId(0), &a, 0, 10, &hit));
        let a_blocks = kv.block_table(SeqId(0)).to_vec();
        // Shares 0..6: block 0 whole, then 4 and 5 of block 1.
        let b = [&a[..6], &[50, 51, 52]].concat();
        let hit = kv.get_computed_blocks(SeqId(1), &b, None);
        assert_eq!(hit.blocks, a_blocks[..1]);
        assert_eq!(
            hit.partial,
            Some(PartialHit {
                src: a_blocks[1],
                num_tokens: 2
            })
        );
        assert_eq!(hit.num_tokens, 6);
        assert!(kv.allocate_slots(SeqId(1), &b, 6, 3, &hit));
        let b_blocks = kv.block_table(SeqId(1)).to_vec();
        assert_eq!(b_blocks.len(), 3);
        assert_eq!(b_blocks[0], a_blocks[0]);
        assert!(!a_blocks.contains(&b_blocks[1]), "a block of its own");
        // The source is pinned: freeing its owner does not free it before the step is planned.
        kv.free(SeqId(0));
        assert_eq!(kv.pool().ref_count(a_blocks[1]), 1);
        assert_eq!(kv.num_free_blocks(), 6 - 3 - 1);
        kv.release_pinned();
        assert_eq!(kv.pool().ref_count(a_blocks[1]), 0);
        assert_eq!(kv.num_free_blocks(), 6 - 3);
        kv.pool().check_invariants();
        // Another salt finds nothing, not even part of a block.
        let salted = kv.get_computed_blocks(SeqId(2), &b, Some(&CacheSalt::new("t")));
        assert_eq!((salted.num_tokens, salted.partial), (0, None));
        kv.free(SeqId(1));
        kv.free(SeqId(2));
        assert_eq!(kv.num_free_blocks(), 6);
    }

    /// The pinned source counts against the free blocks when it is free itself.
    #[test]
    fn a_partial_hit_on_a_free_block_needs_room_for_its_pin() {
        let mut kv = KvCacheManager::new(3, 4, true);
        let a: Vec<u32> = (0..6).collect();
        let hit = kv.get_computed_blocks(SeqId(0), &a, None);
        assert!(kv.allocate_slots(SeqId(0), &a, 0, 6, &hit));
        kv.free(SeqId(0));
        // Shares tokens 0..2 of the free cached block 0 and needs 3 blocks of its own.
        let b = [&a[..2], &[9; 10]].concat();
        let hit = kv.get_computed_blocks(SeqId(1), &b, None);
        assert_eq!(hit.num_tokens, 2);
        assert!(!kv.allocate_slots(SeqId(1), &b, 2, 10, &hit));
        assert_eq!(kv.num_free_blocks(), 3);
        assert!(kv.allocate_slots(SeqId(1), &b, 2, 6, &hit));
        assert_eq!(kv.num_free_blocks(), 0);
        kv.release_pinned();
        kv.free(SeqId(1));
        assert_eq!(kv.num_free_blocks(), 3);
        kv.pool().check_invariants();
    }

    #[test]
    fn allocation_failure_changes_nothing() {
        let mut kv = KvCacheManager::new(2, 4, true);
        let tokens: Vec<u32> = (0..12).collect();
        assert!(!kv.allocate_slots(SeqId(0), &tokens, 0, 12, &ComputedBlocks::default()));
        assert_eq!(kv.num_free_blocks(), 2);
        assert!(kv.allocate_slots(SeqId(0), &tokens, 0, 8, &ComputedBlocks::default()));
        assert_eq!(kv.num_free_blocks(), 0);
    }

    #[test]
    fn different_salts_never_share_blocks() {
        let mut kv = KvCacheManager::new(16, 4, true);
        let prompt: Vec<u32> = (0..10).collect();
        let (a, b) = (CacheSalt::new("tenant-a"), CacheSalt::new("tenant-b"));
        let hit = kv.get_computed_blocks(SeqId(0), &prompt, Some(&a));
        assert!(kv.allocate_slots(SeqId(0), &prompt, 0, 10, &hit));
        // Another salt, or none: the same tokens miss.
        assert_eq!(
            kv.get_computed_blocks(SeqId(1), &prompt, Some(&b))
                .num_tokens,
            0
        );
        assert_eq!(
            kv.get_computed_blocks(SeqId(2), &prompt, None).num_tokens,
            0
        );
        // The same salt hits.
        assert_eq!(
            kv.get_computed_blocks(SeqId(3), &prompt, Some(&a))
                .num_tokens,
            8
        );
        for s in 0..4 {
            kv.free(SeqId(s));
        }
        assert_eq!(kv.num_free_blocks(), 16);
        kv.pool().check_invariants();
    }

    #[test]
    fn tokens_being_sampled_get_slots_and_are_registered_later() {
        let mut kv = KvCacheManager::new(16, 4, true);
        let mut tokens: Vec<u32> = (0..7).collect();
        let hit = kv.get_computed_blocks(SeqId(0), &tokens, None);
        assert!(kv.allocate_slots(SeqId(0), &tokens, 0, 7, &hit));
        // The 8th token is still being sampled: it gets its slot, its block is not cached.
        let none = ComputedBlocks::default();
        assert!(kv.allocate_slots(SeqId(0), &tokens, 7, 1, &none));
        let probe = [tokens.clone(), vec![0; 2]].concat();
        assert_eq!(kv.get_computed_blocks(SeqId(1), &probe, None).num_tokens, 4);
        tokens.push(99);
        let next = [tokens.clone(), vec![5]].concat();
        assert!(kv.allocate_slots(SeqId(0), &next, 8, 1, &none));
        let probe = [tokens.clone(), vec![1]].concat();
        assert_eq!(kv.get_computed_blocks(SeqId(2), &probe, None).num_tokens, 8);
    }

    #[test]
    fn truncate_frees_the_blocks_of_rejected_drafts_only() {
        let mut kv = KvCacheManager::new(16, 4, true);
        let mut tokens: Vec<u32> = (0..6).collect();
        let hit = kv.get_computed_blocks(SeqId(0), &tokens, None);
        assert!(kv.allocate_slots(SeqId(0), &tokens, 0, 6, &hit));
        // The last token and 5 drafts: positions 5..11, three blocks in all.
        let none = ComputedBlocks::default();
        assert!(kv.allocate_slots(SeqId(0), &tokens, 5, 6, &none));
        assert_eq!(kv.block_table(SeqId(0)).len(), 3);
        assert_eq!(kv.num_free_blocks(), 13);
        // One draft accepted plus the bonus token: 8 tokens, two blocks kept.
        tokens.extend([6, 7]);
        kv.truncate(SeqId(0), tokens.len());
        assert_eq!(kv.block_table(SeqId(0)).len(), 2);
        assert_eq!(kv.num_free_blocks(), 14);
        kv.pool().check_invariants();
        // Only the first block (all known when registered) is cached.
        let probe = [tokens.clone(), vec![1]].concat();
        assert_eq!(kv.get_computed_blocks(SeqId(1), &probe, None).num_tokens, 4);
        // The next step registers the second block once its tokens are known.
        assert!(kv.allocate_slots(SeqId(0), &tokens, 7, 1, &none));
        assert_eq!(kv.get_computed_blocks(SeqId(2), &probe, None).num_tokens, 8);
        kv.free(SeqId(0));
        assert_eq!(kv.num_free_blocks(), 16);
    }

    #[test]
    fn blocks_of_a_sequence_never_looked_up_are_not_cached() {
        let mut kv = KvCacheManager::new(16, 4, true);
        let prompt: Vec<u32> = (0..10).collect();
        assert!(kv.allocate_slots(SeqId(0), &prompt, 0, 10, &ComputedBlocks::default()));
        assert_eq!(
            kv.get_computed_blocks(SeqId(1), &prompt, None).num_tokens,
            0
        );
    }
}
