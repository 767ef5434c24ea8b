//! Parameter accounting, as PEFT's `print_trainable_parameters` reports it.

use std::fmt;

/// Trainable and total parameters of an adapted model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterCount {
    pub trainable: usize,
    /// Base model plus adapter.
    pub total: usize,
}

impl ParameterCount {
    /// An adapter of `adapter` parameters on a frozen base of `base` parameters.
    pub fn adapter_on(base: usize, adapter: usize) -> Self {
        Self {
            trainable: adapter,
            total: base + adapter,
        }
    }

    pub fn trainable_percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total.max(1) as f64
    }
}

impl fmt::Display for ParameterCount {
    /// `trainable params: 15,360 || all params: 124,455,168 || trainable%: 0.0123`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(self.trainable),
            thousands(self.total),
            self.trainable_percent()
        )
    }
}

/// `36000` as `36,000`, as PEFT prints parameter counts.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(7), "7");
        assert_eq!(thousands(36_000), "36,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn prints_like_peft() {
        let count = ParameterCount::adapter_on(124_439_808, 15_360);
        assert_eq!(
            count.to_string(),
            "trainable params: 15,360 || all params: 124,455,168 || trainable%: 0.0123"
        );
    }
}
