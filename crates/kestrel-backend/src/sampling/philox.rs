//! Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
//! counter-based generator of cuRAND and PyTorch's CUDA RNG. A draw is a pure function of a key
//! and a counter, so a sequence's random numbers depend only on its seed and its position,
//! never on which other sequences share the step or which device runs it.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// The ten-round Philox bijection of `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A uniform in `[0, 1)` with 53 random bits: draw `stream` at `position` of the sequence
/// seeded with `seed`. Sampling uses stream 0; other streams are free for other draws at the
/// same position (speculative decoding's acceptance test).
pub fn uniform(seed: u64, position: u64, stream: u32) -> f64 {
    let r = philox4x32_10(
        [position as u32, (position >> 32) as u32, stream, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    let bits = (u64::from(r[0]) << 21) | (u64::from(r[1]) >> 11);
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 distribution (`kat_vectors`, philox4x32_10).
    #[test]
    fn matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn uniforms_are_in_range_and_look_uniform() {
        let n = 100_000;
        let mut buckets = [0usize; 10];
        for pos in 0..n {
            let u = uniform(42, pos, 0);
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        for b in buckets {
            // 4 sigma of a binomial(n, 0.1).
            assert!((b as f64 - 10_000.0).abs() < 4.0 * 94.9, "{buckets:?}");
        }
        assert_ne!(uniform(42, 7, 0), uniform(43, 7, 0));
        assert_ne!(uniform(42, 7, 0), uniform(42, 8, 0));
        assert_ne!(uniform(42, 7, 0), uniform(42, 7, 1));
        assert_eq!(uniform(42, 7, 0), uniform(42, 7, 0));
    }
}
