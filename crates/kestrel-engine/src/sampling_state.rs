//! The sampling state the engine keeps per sequence and writes into each step's
//! [`SamplingBatch`]: the request's parameters, the seed of its random numbers (the request's,
//! or one the engine drew), and the token history the penalties read (each distinct token of
//! prompt + output with its output count), kept only when a penalty is set.

use std::collections::HashMap;

use kestrel_backend::SamplingParams;

#[derive(Clone, Debug)]
pub struct SequenceSampling {
    pub params: SamplingParams,
    /// Philox key of this sequence's draws.
    pub seed: u64,
    /// `(token, output count)`, in first-seen order.
    history: Vec<(u32, u32)>,
    /// Token → index in `history`.
    index: HashMap<u32, u32>,
}

impl SequenceSampling {
    /// `seed` is used when the request has none (`params.seed` wins).
    pub fn new(params: SamplingParams, prompt: &[u32], seed: u64) -> Self {
        let mut s = Self {
            seed: params.seed.unwrap_or(seed),
            params,
            history: Vec::new(),
            index: HashMap::new(),
        };
        for &t in prompt {
            s.record(t, 0);
        }
        s
    }

    fn record(&mut self, token: u32, output: u32) {
        if !self.params.has_penalties() {
            return;
        }
        match self.index.get(&token) {
            Some(&i) => self.history[i as usize].1 += output,
            None => {
                self.index.insert(token, self.history.len() as u32);
                self.history.push((token, output));
            }
        }
    }

    /// Records a token appended to the output; the penalties of later steps count it.
    pub fn push_output(&mut self, token: u32) {
        self.record(token, 1);
    }

    /// `(token, output count)` of every distinct token so far (empty without penalties).
    pub fn history(&self) -> &[(u32, u32)] {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_counts_output_occurrences_only_with_penalties() {
        let p = SamplingParams {
            frequency_penalty: 0.5,
            ..Default::default()
        };
        let mut s = SequenceSampling::new(p, &[3, 4, 3], 9);
        s.push_output(4);
        s.push_output(7);
        s.push_output(4);
        assert_eq!(s.history(), [(3, 0), (4, 2), (7, 1)]);
        assert_eq!(s.seed, 9);
        let mut plain = SequenceSampling::new(
            SamplingParams {
                seed: Some(5),
                ..Default::default()
            },
            &[1, 2],
            9,
        );
        plain.push_output(1);
        assert!(plain.history().is_empty());
        assert_eq!(plain.seed, 5);
    }
}
