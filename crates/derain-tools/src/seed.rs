//! Seed mixing: SplitMix64, the one integer hash behind every reproducible random draw of the
//! offline tools (rain renders, training crops, noise), so a seed means the same thing
//! everywhere. Written by hand: eight lines that no crate offers on their own.

/// SplitMix64's golden-ratio increment.
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser alone: a fast, well-mixed, platform-independent 64-bit hash.
pub fn finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One SplitMix64 step: the finaliser of `z` + [`GOLDEN`].
pub fn mix(z: u64) -> u64 {
    finalise(z.wrapping_add(GOLDEN))
}

/// A uniform number in [0, 1) from the top 53 bits of `z`.
pub fn unit(z: u64) -> f64 {
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_splitmix64() {
        // The first outputs of SplitMix64 seeded with 0 (Vigna's reference generator): its
        // state advances by GOLDEN and each output is the finaliser of the new state.
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(GOLDEN), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(finalise(GOLDEN), mix(0));
        assert!((0.0..1.0).contains(&unit(u64::MAX)));
        assert_eq!(unit(0), 0.0);
    }
}
