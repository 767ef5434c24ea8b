//! The exponential of the CPU kernels' softmaxes (the fused attention's probabilities, the
//! fused loss's vocabulary), a whole slice at a time.
//!
//! Why not `f32::exp`: it calls the C library's scalar `expf` once per element, which no
//! compiler vectorises; the loss alone takes 25.7 M of them per GPT-2 step at 4 × 128 (4% of a
//! flex step in `perf`). Here the exponential is Cephes' `expf` — a rounding to a power of two and
//! a degree-6 polynomial of the remainder, within 2 ulp of the true value — written as plain
//! arithmetic the compiler turns into eight-lane AVX2 instructions where the CPU has them
//! (checked at run time, the build targets baseline x86-64) and four-lane SSE2 otherwise.
//!
//! Only what a softmax needs is covered: inputs at or below 0 (a score minus its row's
//! maximum). Below −87 the result is 0, where `expf` gives at most 1.6e−38; NaN stays NaN, so a
//! diverged model still shows a NaN loss.

/// Below this the result is 0: `exp(−87)` is the last value above f32's smallest normal.
const LOWEST: f32 = -87.0;

/// `values[i] = exp(values[i])` for inputs at or below 0 (see the module's documentation).
pub fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { exp_in_place_avx2(values) };
    }
    exp_in_place_portable(values);
}

/// [`exp_in_place_portable`] compiled for AVX2 and FMA (eight lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_in_place_avx2(values: &mut [f32]) {
    exp_in_place_portable(values);
}

#[inline(always)]
fn exp_in_place_portable(values: &mut [f32]) {
    for value in values {
        *value = exp_nonpositive(*value);
    }
}

/// Cephes' `expf` for `x <= 0`, branch-free so that a loop over it vectorises.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // 1.5 · 2²³: adding it rounds any |v| < 2²² to an integer, held in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in few bits, so that `x − n·ln 2` loses nothing.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // A comparison with NaN is false, so NaN passes through (`f32::max` would replace it).
    let clamped = if x < LOWEST { LOWEST } else { x };
    let shifted = clamped * LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = clamped - n * LN2_HIGH - n * LN2_LOW;
    let poly = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let exp_r = poly * r * r + r + 1.0;
    // 2ⁿ from n's bits: the rounded integer sits in `shifted`'s low mantissa bits, offset by
    // the rounder's own; n ∈ [−126, 0] here, so the exponent field n + 127 is in range.
    let n_bits = (shifted.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let power = f32::from_bits((n_bits.wrapping_add(127) << 23) as u32);
    if x < LOWEST { 0.0 } else { exp_r * power }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the dispatch (AVX2 where the CPU has it), after checking that the portable body
    /// gives the same values.
    fn exp_of(values: &[f32]) -> Vec<f32> {
        let mut out = values.to_vec();
        exp_in_place(&mut out);
        let mut portable = values.to_vec();
        exp_in_place_portable(&mut portable);
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&out),
            bits(&portable),
            "dispatched and portable results differ"
        );
        out
    }

    #[test]
    fn matches_the_exponential_within_two_ulp_over_the_softmax_range() {
        // Every 1/1024 from −87 to 0, and the interval's ends, in slices of uneven lengths (the
        // vectorised body and its scalar tail).
        let inputs: Vec<f32> = (0..=87 * 1024).map(|i| -(i as f32) / 1024.0).collect();
        let mut worst = 0.0f64;
        for chunk in inputs.chunks(37) {
            for (&x, &got) in chunk.iter().zip(&exp_of(chunk)) {
                let exact = f64::from(x).exp();
                let ulp = f64::from(f32::EPSILON) * exact;
                worst = worst.max((f64::from(got) - exact).abs() / ulp);
            }
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(exp_of(&[0.0]), [1.0]);
    }

    #[test]
    fn below_the_normal_range_gives_zero_and_nan_stays_nan() {
        let out = exp_of(&[-87.5, -1000.0, f32::NEG_INFINITY, f32::NAN, -1.0]);
        assert_eq!(&out[..3], [0.0, 0.0, 0.0]);
        assert!(out[3].is_nan());
        assert!((out[4] - (-1.0f32).exp()).abs() <= f32::EPSILON);
    }
}
