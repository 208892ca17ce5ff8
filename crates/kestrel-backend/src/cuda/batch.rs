//! The step's batch on the device: the flat arrays of [`BatchInput`] in persistent buffers
//! sized for the largest step, overwritten in place by each upload; the host keeps the counts
//! that size the launches.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::buffers::zeros;
use super::launch::ptr;
use crate::error::{BackendError, Result};
use crate::{BatchInput, BatchLimits, KvCopy};

pub struct CudaBatch {
    pub input_ids: CudaSlice<u32>,
    pub positions: CudaSlice<u32>,
    pub slot_mapping: CudaSlice<u32>,
    pub query_start_loc: CudaSlice<u32>,
    pub seq_lens: CudaSlice<u32>,
    pub block_tables: CudaSlice<u32>,
    pub block_table_start: CudaSlice<u32>,
    pub logits_indices: CudaSlice<u32>,
    /// `[2 * max_tokens]` `(token, previous row)` pairs.
    pub prev_sampled: CudaSlice<u32>,
    /// `[3 * max_seqs]` `(source block, destination block, slots)` KV copies.
    pub kv_copies: CudaSlice<u32>,
    /// The step's KV copies, kept on the host too (checked against the cache before launch).
    pub host_kv_copies: Vec<KvCopy>,
    pub limits: BatchLimits,
    pub num_tokens: usize,
    pub num_seqs: usize,
    pub num_logits: usize,
    pub num_prev: usize,
    pub block_size: usize,
}

impl CudaBatch {
    pub fn new(stream: &Arc<CudaStream>, limits: BatchLimits) -> Result<Self> {
        let t = limits.max_tokens;
        let s = limits.max_seqs;
        Ok(Self {
            input_ids: zeros(stream, t, "batch ids")?,
            positions: zeros(stream, t, "batch positions")?,
            slot_mapping: zeros(stream, t, "batch slots")?,
            query_start_loc: zeros(stream, s + 1, "batch query starts")?,
            seq_lens: zeros(stream, s, "batch sequence lengths")?,
            block_tables: zeros(stream, limits.max_blocks, "batch block tables")?,
            block_table_start: zeros(stream, s + 1, "batch block table starts")?,
            logits_indices: zeros(stream, t, "batch logit rows")?,
            prev_sampled: zeros(stream, 2 * t, "batch placeholders")?,
            kv_copies: zeros(stream, 3 * s, "batch KV copies")?,
            host_kv_copies: Vec::with_capacity(s),
            limits,
            num_tokens: 0,
            num_seqs: 0,
            num_logits: 0,
            num_prev: 0,
            block_size: 16,
        })
    }

    /// Copies `src` into the buffers (checked against the limits).
    pub fn fill(&mut self, stream: &Arc<CudaStream>, src: &BatchInput) -> Result<()> {
        let l = self.limits;
        if src.num_tokens() > l.max_tokens
            || src.num_seqs() > l.max_seqs
            || src.block_tables.len() > l.max_blocks
            || src.kv_copies.len() > l.max_seqs
        {
            return Err(BackendError::Batch(format!(
                "{} tokens, {} sequences, {} blocks and {} KV copies exceed the step limits {l:?}",
                src.num_tokens(),
                src.num_seqs(),
                src.block_tables.len(),
                src.kv_copies.len()
            )));
        }
        let copy = |host: &[u32], dev: &mut CudaSlice<u32>| -> Result<()> {
            if host.is_empty() {
                return Ok(());
            }
            stream
                .memcpy_htod(host, &mut dev.slice_mut(..host.len()))
                .map_err(|e| BackendError::Device(format!("uploading the batch: {e}")))
        };
        copy(&src.input_ids, &mut self.input_ids)?;
        copy(&src.positions, &mut self.positions)?;
        copy(&src.slot_mapping, &mut self.slot_mapping)?;
        copy(&src.query_start_loc, &mut self.query_start_loc)?;
        copy(&src.seq_lens, &mut self.seq_lens)?;
        copy(&src.block_tables, &mut self.block_tables)?;
        copy(&src.block_table_start, &mut self.block_table_start)?;
        copy(&src.logits_indices, &mut self.logits_indices)?;
        let pairs: Vec<u32> = src
            .prev_sampled
            .iter()
            .flat_map(|&(t, row)| [t, row])
            .collect();
        copy(&pairs, &mut self.prev_sampled)?;
        self.host_kv_copies.clear();
        self.host_kv_copies.extend_from_slice(&src.kv_copies);
        let triples: Vec<u32> = src
            .kv_copies
            .iter()
            .flat_map(|c| [c.src_block, c.dst_block, c.num_tokens])
            .collect();
        copy(&triples, &mut self.kv_copies)?;
        self.num_tokens = src.num_tokens();
        self.num_seqs = src.num_seqs();
        self.num_logits = src.num_logits();
        self.num_prev = src.prev_sampled.len();
        self.block_size = src.block_size;
        Ok(())
    }

    pub fn ids_ptr(&self, stream: &CudaStream) -> u64 {
        ptr(&self.input_ids, stream)
    }
}
