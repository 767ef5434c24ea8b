//! The dropout mask of the CPU kernels (the attention's probabilities, [`crate::fused_dropout`]):
//! whether an element is kept is a hash of the call's seed and the element's index in its
//! row-major tensor, so the backward (and a test) regenerates exactly the forward's mask
//! without storing it, and any core can draw any element's.

/// The mask of one call.
#[derive(Clone, Copy)]
pub(crate) struct DropoutMask {
    /// The call's seed, mixed once.
    key: u64,
    /// An element is kept when its hash's top 24 bits are at least this (`rate · 2²⁴`).
    threshold: u32,
    /// `1 / (1 − rate)`: what kept elements are scaled by.
    keep_scale: f32,
}

impl DropoutMask {
    /// The mask for dropping with probability `rate`; none when `rate` is 0.
    pub(crate) fn new(rate: f64, seed: u64) -> Option<Self> {
        (rate > 0.0).then(|| Self {
            key: mix(seed ^ GOLDEN_GAMMA),
            threshold: (rate * (1u64 << 24) as f64) as u32,
            keep_scale: (1.0 / (1.0 - rate)) as f32,
        })
    }

    pub(crate) fn keeps(&self, index: u64) -> bool {
        (mix(self.key ^ index.wrapping_mul(GOLDEN_GAMMA)) >> 40) as u32 >= self.threshold
    }

    /// Drops or scales `values`, the elements from index `first` on.
    pub(crate) fn apply(&self, values: &mut [f32], first: u64) {
        for (index, value) in (first..).zip(values.iter_mut()) {
            *value = if self.keeps(index) {
                *value * self.keep_scale
            } else {
                0.0
            };
        }
    }

    /// Drops or scales `values`: the first `seen` elements of consecutive rows of `width`, the
    /// first of them at index `first`.
    pub(crate) fn apply_rows(&self, values: &mut [f32], seen: usize, first: u64, width: usize) {
        for (row, values) in (0u64..).zip(values.chunks_mut(seen)) {
            self.apply(values, first + row * width as u64);
        }
    }
}

/// SplitMix64's increment and finaliser: a fast bijective hash whose outputs pass statistical
/// tests of randomness for consecutive inputs, as indices are.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(x: u64) -> u64 {
    let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
