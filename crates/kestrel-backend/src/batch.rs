//! The flat, variable-length batch of one forward step (vLLM v1 style): prefill chunks and
//! decode tokens of different sequences side by side, with the paged-KV addressing for each.
//!
//! The engine owns one `BatchInput` and refills it every step ([`BatchInput::clear`] keeps the
//! capacity), so building a batch allocates nothing once the largest step has been seen. Block
//! tables are one flat array with per-sequence offsets, the layout a device copies in one go.
//!
//! A sequence admitted on a partial prefix-cache hit reuses the leading tokens of a cached block
//! that it does not share whole: the step copies those slots into the sequence's own block
//! ([`BatchInput::kv_copies`]) in each layer after writing the step's K/V and before attention.
//!
//! A token whose id is not known on the host yet (the engine scheduled it while the step that
//! samples it was still running) is written as [`PLACEHOLDER`]; [`BatchInput::prev_sampled`]
//! names the logit row of the previous step whose sampled id the backend puts there.

use crate::error::{BackendError, Result};

/// Input id of a token that the previous step samples (see [`BatchInput::prev_sampled`]).
pub const PLACEHOLDER: u32 = u32::MAX;

/// Copy of the first `num_tokens` slots of cache block `src_block` into block `dst_block`
/// (K and V of every layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvCopy {
    pub src_block: u32,
    pub dst_block: u32,
    pub num_tokens: u32,
}

/// One step's input. `num_tokens` = `input_ids.len()`, `num_seqs` = `seq_lens.len()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInput {
    /// `[num_tokens]` token ids, sequences concatenated.
    pub input_ids: Vec<u32>,
    /// `[num_tokens]` absolute position of each token in its sequence.
    pub positions: Vec<u32>,
    /// `[num_tokens]` KV cache slot (`block * block_size + offset`) each token writes to.
    pub slot_mapping: Vec<u32>,
    /// `[num_seqs + 1]` start of each sequence's tokens in the flat batch.
    pub query_start_loc: Vec<u32>,
    /// `[num_seqs]` total tokens of each sequence in the cache after this step.
    pub seq_lens: Vec<u32>,
    /// Every sequence's cache blocks, in order, concatenated.
    pub block_tables: Vec<u32>,
    /// `[num_seqs + 1]` start of each sequence's blocks in `block_tables`.
    pub block_table_start: Vec<u32>,
    /// `[num_logits]` rows of the flat batch whose logits are wanted (usually each sampling
    /// sequence's last token; a speculative verification wants its last `1 + num_drafts`),
    /// in sampling-row order.
    pub logits_indices: Vec<u32>,
    /// `(token index, logit row of the previous step)` for every [`PLACEHOLDER`] input id.
    pub prev_sampled: Vec<(u32, u32)>,
    /// Slots copied between blocks before the step's attention reads them.
    pub kv_copies: Vec<KvCopy>,
    /// Tokens per cache block.
    pub block_size: usize,
}

impl Default for BatchInput {
    fn default() -> Self {
        Self::new(16)
    }
}

impl BatchInput {
    /// An empty batch for a cache of `block_size`-token blocks.
    pub fn new(block_size: usize) -> Self {
        Self {
            input_ids: Vec::new(),
            positions: Vec::new(),
            slot_mapping: Vec::new(),
            query_start_loc: vec![0],
            seq_lens: Vec::new(),
            block_tables: Vec::new(),
            block_table_start: vec![0],
            logits_indices: Vec::new(),
            prev_sampled: Vec::new(),
            kv_copies: Vec::new(),
            block_size,
        }
    }

    /// Empties the batch, keeping every buffer's capacity.
    pub fn clear(&mut self) {
        self.input_ids.clear();
        self.positions.clear();
        self.slot_mapping.clear();
        self.query_start_loc.clear();
        self.query_start_loc.push(0);
        self.seq_lens.clear();
        self.block_tables.clear();
        self.block_table_start.clear();
        self.block_table_start.push(0);
        self.logits_indices.clear();
        self.prev_sampled.clear();
        self.kv_copies.clear();
    }

    pub fn num_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    pub fn num_logits(&self) -> usize {
        self.logits_indices.len()
    }

    /// Sequence `s`'s block table.
    pub fn block_table(&self, s: usize) -> &[u32] {
        &self.block_tables
            [self.block_table_start[s] as usize..self.block_table_start[s + 1] as usize]
    }

    /// Appends a sequence: `tokens` (placeholders allowed, see [`Self::set_prev_sampled`]) at
    /// positions `num_computed..`, its whole block `table`, and a logit row for its last token
    /// when `sample`.
    pub fn push_seq(
        &mut self,
        tokens: impl IntoIterator<Item = u32>,
        num_computed: usize,
        table: &[u32],
        sample: bool,
    ) {
        self.push_seq_rows(tokens, num_computed, table, usize::from(sample));
    }

    /// [`Self::push_seq`] with logit rows for the last `num_logits` tokens (at most all of
    /// them), in order: a speculative verification samples after its last token and after
    /// each draft.
    pub fn push_seq_rows(
        &mut self,
        tokens: impl IntoIterator<Item = u32>,
        num_computed: usize,
        table: &[u32],
        num_logits: usize,
    ) {
        let bs = self.block_size;
        let mut pos = num_computed;
        for tok in tokens {
            self.input_ids.push(tok);
            self.positions.push(pos as u32);
            self.slot_mapping
                .push((table[pos / bs] as usize * bs + pos % bs) as u32);
            pos += 1;
        }
        self.query_start_loc.push(self.input_ids.len() as u32);
        self.seq_lens.push(pos as u32);
        self.block_tables.extend_from_slice(table);
        self.block_table_start.push(self.block_tables.len() as u32);
        let end = self.input_ids.len() as u32;
        let num_logits = num_logits.min(pos - num_computed) as u32;
        self.logits_indices.extend(end - num_logits..end);
    }

    /// Marks token `token` (a [`PLACEHOLDER`]) as the id the previous step samples in `row`.
    pub fn set_prev_sampled(&mut self, token: usize, row: usize) {
        self.input_ids[token] = PLACEHOLDER;
        self.prev_sampled.push((token as u32, row as u32));
    }

    /// A batch of whole or partial sequences given as `(new_tokens, num_cached_before, block_table)`,
    /// each with a logit row for its last token.
    pub fn from_sequences(seqs: &[(&[u32], usize, &[u32])], block_size: usize) -> Self {
        let mut b = Self::new(block_size);
        for &(tokens, num_cached, table) in seqs {
            b.push_seq(tokens.iter().copied(), num_cached, table, true);
        }
        b
    }

    /// Checks every invariant the kernels rely on, so that a bad batch is an error, not a
    /// read out of bounds: lengths agree, each sequence's query tokens are its last ones with
    /// consecutive positions, every slot a token writes or reads lies in its block table and
    /// in the cache, ids are in the vocabulary, and every placeholder is resolved by the
    /// previous step (`prev_rows` logit rows).
    pub fn validate(&self, num_cache_blocks: usize, vocab: usize, prev_rows: usize) -> Result<()> {
        let bad = |m: String| Err(BackendError::Batch(m));
        let n = self.num_tokens();
        if self.positions.len() != n || self.slot_mapping.len() != n {
            return bad(format!(
                "{n} input ids but {} positions and {} slots",
                self.positions.len(),
                self.slot_mapping.len()
            ));
        }
        let num_seqs = self.num_seqs();
        if self.query_start_loc.len() != num_seqs + 1
            || self.block_table_start.len() != num_seqs + 1
        {
            return bad("query_start_loc / block_table_start do not match seq_lens".into());
        }
        if self.block_size == 0 {
            return bad("block_size is 0".into());
        }
        if self.query_start_loc.first() != Some(&0)
            || self.query_start_loc.last() != Some(&(n as u32))
            || self.block_table_start.first() != Some(&0)
            || self.block_table_start.last() != Some(&(self.block_tables.len() as u32))
        {
            return bad(
                "query_start_loc and block_table_start must run from 0 to their arrays' ends"
                    .into(),
            );
        }
        if let Some(&b) = self
            .block_tables
            .iter()
            .find(|&&b| b as usize >= num_cache_blocks)
        {
            return bad(format!("block {b} outside the cache of {num_cache_blocks}"));
        }
        for s in 0..num_seqs {
            let (start, end) = (
                self.query_start_loc[s] as usize,
                self.query_start_loc[s + 1] as usize,
            );
            let (b0, b1) = (
                self.block_table_start[s] as usize,
                self.block_table_start[s + 1] as usize,
            );
            if start > end || b0 > b1 {
                return bad(format!("sequence {s}: offsets decrease"));
            }
            let seq_len = self.seq_lens[s] as usize;
            let num_query = end - start;
            if num_query > seq_len {
                return bad(format!(
                    "sequence {s}: {num_query} query tokens but seq_len {seq_len}"
                ));
            }
            let table = &self.block_tables[b0..b1];
            if table.len() * self.block_size < seq_len {
                return bad(format!(
                    "sequence {s}: block table too short for {seq_len} tokens"
                ));
            }
            for (i, t) in (start..end).enumerate() {
                let pos = (seq_len - num_query + i) as u32;
                if self.positions[t] != pos {
                    return bad(format!(
                        "token {t}: position {} expected {pos}",
                        self.positions[t]
                    ));
                }
                let block = table[pos as usize / self.block_size] as usize;
                let slot = (block * self.block_size + pos as usize % self.block_size) as u32;
                if self.slot_mapping[t] != slot {
                    return bad(format!(
                        "token {t}: slot {} expected {slot}",
                        self.slot_mapping[t]
                    ));
                }
            }
        }
        for c in &self.kv_copies {
            if c.src_block as usize >= num_cache_blocks
                || c.dst_block as usize >= num_cache_blocks
                || c.src_block == c.dst_block
                || c.num_tokens as usize > self.block_size
            {
                return bad(format!(
                    "KV copy of {} slots from block {} to block {} in a cache of {num_cache_blocks} blocks of {}",
                    c.num_tokens, c.src_block, c.dst_block, self.block_size
                ));
            }
        }
        if let Some(&i) = self.logits_indices.iter().find(|&&i| i as usize >= n) {
            return bad(format!("logits index {i} outside {n} tokens"));
        }
        let mut resolved = 0;
        for &(t, row) in &self.prev_sampled {
            if t as usize >= n || self.input_ids[t as usize] != PLACEHOLDER {
                return bad(format!("placeholder {t} is not a placeholder token"));
            }
            if row as usize >= prev_rows {
                return bad(format!(
                    "placeholder {t} reads row {row} of a previous step with {prev_rows}"
                ));
            }
            resolved += 1;
        }
        let placeholders = self
            .input_ids
            .iter()
            .filter(|&&id| id == PLACEHOLDER)
            .count();
        if placeholders != resolved {
            return bad(format!(
                "{placeholders} placeholder ids but {resolved} resolutions"
            ));
        }
        if let Some(&id) = self
            .input_ids
            .iter()
            .find(|&&id| id != PLACEHOLDER && id as usize >= vocab)
        {
            return bad(format!("token id {id} outside the vocabulary of {vocab}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_seq_lays_out_slots_tables_and_logit_rows() {
        let mut b = BatchInput::new(4);
        b.push_seq([7, 8, 9], 0, &[5], true);
        b.push_seq([3], 5, &[2, 0], true);
        b.push_seq([1, 1], 0, &[6], false);
        assert_eq!(b.slot_mapping, [20, 21, 22, 1, 24, 25]);
        assert_eq!(b.positions, [0, 1, 2, 5, 0, 1]);
        assert_eq!(b.query_start_loc, [0, 3, 4, 6]);
        assert_eq!(b.seq_lens, [3, 6, 2]);
        assert_eq!(b.block_table(1), [2, 0]);
        assert_eq!(b.logits_indices, [2, 3]);
        b.validate(8, 10, 0).unwrap();
        // A verification of two drafts: rows for its last three tokens.
        b.push_seq_rows([4, 5, 6], 2, &[1, 7], 3);
        assert_eq!(b.logits_indices, [2, 3, 6, 7, 8]);
        assert_eq!(b.positions[6..], [2, 3, 4]);
        b.validate(8, 10, 0).unwrap();
        b.clear();
        assert_eq!(b, BatchInput::new(4));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut b = BatchInput::from_sequences(&[(&[1, 2], 0, &[3])], 4);
        assert!(b
            .validate(3, 10, 0)
            .unwrap_err()
            .to_string()
            .contains("outside the cache"));
        assert!(b
            .validate(4, 2, 0)
            .unwrap_err()
            .to_string()
            .contains("vocabulary"));
        b.set_prev_sampled(1, 2);
        assert!(b
            .validate(4, 10, 2)
            .unwrap_err()
            .to_string()
            .contains("row 2"));
        b.validate(4, 10, 3).unwrap();
        b.kv_copies.push(KvCopy {
            src_block: 1,
            dst_block: 3,
            num_tokens: 5,
        });
        assert!(b
            .validate(4, 10, 3)
            .unwrap_err()
            .to_string()
            .contains("KV copy of 5 slots"));
        b.kv_copies[0].num_tokens = 4;
        b.validate(4, 10, 3).unwrap();
        b.kv_copies[0].dst_block = 4;
        assert!(b.validate(4, 10, 3).is_err());
        b.kv_copies.clear();
        b.input_ids[0] = PLACEHOLDER;
        assert!(b
            .validate(4, 10, 3)
            .unwrap_err()
            .to_string()
            .contains("resolutions"));
    }
}
