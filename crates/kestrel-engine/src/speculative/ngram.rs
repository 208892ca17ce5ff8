//! Prompt-lookup drafting (vLLM's `ngram` method, "prompt lookup decoding"): find the longest
//! suffix of the sequence, between `min` and `max` tokens, that also occurs earlier in it
//! (prompt or output), and propose the tokens that followed that earlier occurrence. Among
//! equally long matches the most recent wins: in a repeating output it is the current cycle.
//! One backward pass over the tokens, `O(len · max)`, no allocation.

/// Writes into `out` (cleared first) up to `k` tokens that followed the most recent earlier
/// occurrence of the longest matching suffix n-gram of `tokens` (`min ..= max` tokens long);
/// nothing when no suffix of at least `min` tokens occurs earlier.
pub fn propose(tokens: &[u32], min: usize, max: usize, k: usize, out: &mut Vec<u32>) {
    out.clear();
    let len = tokens.len();
    if min == 0 || k == 0 || len <= min {
        return;
    }
    let max = max.min(len - 1);
    // `end`: one past an earlier occurrence's last token; the suffix itself ends at `len`.
    let mut best: Option<(usize, usize)> = None; // (n-gram length, end)
    for end in (min..len).rev() {
        let mut n = 0;
        while n < max && n < end && tokens[end - 1 - n] == tokens[len - 1 - n] {
            n += 1;
        }
        if n >= min && best.is_none_or(|(m, _)| n > m) {
            best = Some((n, end));
            if n == max {
                break;
            }
        }
    }
    if let Some((_, end)) = best {
        out.extend_from_slice(&tokens[end..len.min(end + k)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(tokens: &[u32], min: usize, max: usize, k: usize) -> Vec<u32> {
        let mut out = vec![99];
        propose(tokens, min, max, k, &mut out);
        out
    }

    #[test]
    fn proposes_what_followed_the_suffix() {
        // "1 2 3 4 5 ... 1 2" → 3 4 5
        let t = [1, 2, 3, 4, 5, 9, 9, 1, 2];
        assert_eq!(p(&t, 2, 3, 3), [3, 4, 5]);
        assert_eq!(p(&t, 2, 3, 10), [3, 4, 5, 9, 9, 1, 2]);
        assert_eq!(p(&t, 2, 3, 1), [3]);
        // min 3: "9 1 2" never occurred before.
        assert!(p(&t, 3, 4, 3).is_empty());
    }

    #[test]
    fn longest_match_wins_then_the_most_recent() {
        // Suffix "7 1 2": "1 2" occurs at 0 (followed by 3) and "7 1 2" at 4.. (followed by 8).
        let t = [1, 2, 3, 7, 1, 2, 8, 5, 1, 2, 6, 7, 1, 2];
        assert_eq!(p(&t, 2, 4, 2), [8, 5]);
        // With max 2 only "1 2" is matched: the most recent earlier one is followed by 6.
        assert_eq!(p(&t, 2, 2, 2), [6, 7]);
    }

    #[test]
    fn repeating_output_proposes_the_cycle() {
        let t = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6];
        assert_eq!(p(&t, 1, 3, 4), [7, 8, 5, 6]);
    }

    #[test]
    fn nothing_for_short_or_fresh_sequences() {
        assert!(p(&[], 1, 3, 4).is_empty());
        assert!(p(&[1], 1, 3, 4).is_empty());
        assert!(p(&[1, 2, 3, 4], 1, 3, 4).is_empty());
        assert!(p(&[1, 1], 2, 3, 4).is_empty());
        assert_eq!(p(&[1, 1], 1, 3, 4), [1]);
        assert!(p(&[1, 2, 1], 1, 3, 0).is_empty());
    }
}
