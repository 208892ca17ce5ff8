//! The flat, variable-length batch of one forward step (vLLM v1 style): prefill chunks and
//! decode tokens of different sequences side by side, with the paged-KV addressing for each.

use crate::error::{BackendError, Result};

/// One step's input. `num_tokens` = `input_ids.len()`, `num_seqs` = `seq_lens.len()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// `[num_seqs][..]` cache blocks of each sequence, in order.
    pub block_tables: Vec<Vec<u32>>,
    /// Rows of the flat batch whose logits are wanted (usually each sequence's last token).
    pub logits_indices: Vec<u32>,
    /// Tokens per cache block.
    pub block_size: usize,
}

impl BatchInput {
    pub fn num_tokens(&self) -> usize {
        self.input_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.seq_lens.len()
    }

    /// Checks every invariant the kernels rely on, so that a bad batch is an error, not a
    /// read out of bounds: lengths agree, each sequence's query tokens are its last ones with
    /// consecutive positions, and every slot a token writes or reads lies in its block table.
    pub fn validate(&self, num_cache_blocks: usize) -> Result<()> {
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
        if self.query_start_loc.len() != num_seqs + 1 || self.block_tables.len() != num_seqs {
            return bad("query_start_loc / block_tables do not match seq_lens".into());
        }
        if self.block_size == 0 {
            return bad("block_size is 0".into());
        }
        if self.query_start_loc.first() != Some(&0)
            || self.query_start_loc.last() != Some(&(n as u32))
        {
            return bad("query_start_loc must start at 0 and end at num_tokens".into());
        }
        for s in 0..num_seqs {
            let (start, end) = (
                self.query_start_loc[s] as usize,
                self.query_start_loc[s + 1] as usize,
            );
            if start > end {
                return bad(format!("sequence {s}: query_start_loc decreases"));
            }
            let seq_len = self.seq_lens[s] as usize;
            let num_query = end - start;
            if num_query > seq_len {
                return bad(format!(
                    "sequence {s}: {num_query} query tokens but seq_len {seq_len}"
                ));
            }
            let table = &self.block_tables[s];
            if table.len() * self.block_size < seq_len {
                return bad(format!(
                    "sequence {s}: block table too short for {seq_len} tokens"
                ));
            }
            if let Some(&b) = table.iter().find(|&&b| b as usize >= num_cache_blocks) {
                return bad(format!(
                    "sequence {s}: block {b} outside the cache of {num_cache_blocks}"
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
        if let Some(&i) = self.logits_indices.iter().find(|&&i| i as usize >= n) {
            return bad(format!("logits index {i} outside {n} tokens"));
        }
        Ok(())
    }

    /// A batch of whole or partial sequences given as `(new_tokens, num_cached_before, block_table)`:
    /// positions, slots and logits indices (last token of each sequence) derived from them.
    pub fn from_sequences(seqs: &[(&[u32], usize, &[u32])], block_size: usize) -> Self {
        let mut b = BatchInput {
            block_size,
            query_start_loc: vec![0],
            ..Default::default()
        };
        for &(tokens, num_cached, table) in seqs {
            for (i, &tok) in tokens.iter().enumerate() {
                let pos = num_cached + i;
                b.input_ids.push(tok);
                b.positions.push(pos as u32);
                let slot = table[pos / block_size] as usize * block_size + pos % block_size;
                b.slot_mapping.push(slot as u32);
            }
            b.query_start_loc.push(b.input_ids.len() as u32);
            b.seq_lens.push((num_cached + tokens.len()) as u32);
            b.block_tables.push(table.to_vec());
            if !tokens.is_empty() {
                b.logits_indices.push(b.input_ids.len() as u32 - 1);
            }
        }
        b
    }
}
