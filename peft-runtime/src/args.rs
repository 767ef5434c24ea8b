//! Command-line arguments every tool shares: the compute backend, and value checks for numeric
//! flags, so that a bad value is a usage error naming the flag rather than a division by zero,
//! an assertion deep in Burn, or a silently useless run.

use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::DType;
use clap::{Args, ValueEnum};

use crate::backend::ComputeBackend;

/// Where the model runs and in which float type: the compute backend (any compiled in; by
/// default the best one) and the precision of the frozen base model.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArg {
    /// flex, ndarray, vulkan, tch, tch-cuda or cuda (each needs its cargo feature).
    #[arg(long, value_parser = parse_backend)]
    pub device: Option<ComputeBackend>,
    /// Float type the model runs in. In bf16 or f16 the adapter's parameters (in full
    /// fine-tuning, the trained weights), their gradients and AdamW's state stay f32 and the
    /// loss is taken in f32, as under PyTorch autocast.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub dtype: Precision,
}

/// The float type a frozen base model is stored and run in (`--dtype`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    pub fn is_half(self) -> bool {
        self != Precision::F32
    }

    /// The type to store a model's weights in for a run in this one: itself, except f32 for
    /// weights that are `trained` (full fine-tuning keeps f32 master weights and runs only its
    /// forward passes in the half type).
    pub fn of_weights(self, trained: bool) -> Precision {
        if trained { Precision::F32 } else { self }
    }
}

impl DeviceArg {
    /// `backend` in f32.
    pub fn on(backend: ComputeBackend) -> Self {
        Self {
            device: Some(backend),
            dtype: Precision::F32,
        }
    }

    /// The backend asked for, or the best one compiled in.
    pub fn backend(&self) -> ComputeBackend {
        self.device.unwrap_or_else(ComputeBackend::best_available)
    }

    /// The device (tracking gradients if `autodiff`), after checking that its backend runs
    /// the asked-for float type.
    pub fn open(&self, autodiff: bool) -> Result<Device> {
        let backend = self.backend();
        if backend == ComputeBackend::Vulkan && self.dtype.is_half() {
            // Measured on an H100 (2026-11-27): f16 prompt tuning on Vulkan gave a NaN loss at
            // its first step. Refused until a GPU run shows it fixed.
            bail!(
                "the vulkan backend runs f32 only here: f16 gave NaN losses on a GPU and it has \
                 no bf16; use --dtype f32, or --device tch-cuda for half precision on NVIDIA"
            );
        }
        let device = backend.device()?;
        if self.dtype.is_half() && !device.supports_dtype(self.dtype.dtype()) {
            bail!(
                "the {} backend cannot run {} tensors; use --dtype f32{}",
                backend.name(),
                self.dtype.name(),
                if device.supports_dtype(DType::F16) && self.dtype != Precision::F16 {
                    " or --dtype f16"
                } else {
                    ""
                }
            );
        }
        Ok(if autodiff { device.autodiff() } else { device })
    }
}

fn parse_backend(s: &str) -> Result<ComputeBackend, String> {
    ComputeBackend::parse_compiled(s).map_err(|e| e.to_string())
}

/// A flag's value as a number, or a usage error that quotes it.
pub fn parse_number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("`{s}` is not a number"))
}

/// A count that must be at least 1 (batch sizes, epochs, steps, ...), for clap flags: a zero
/// would otherwise be a division by zero or an empty run deep inside.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match parse_number::<usize>(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

pub fn positive(s: &str) -> Result<f64, String> {
    let x: f64 = parse_number(s)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(format!("must be a finite number above 0, not {s}"))
    }
}

pub fn non_negative(s: &str) -> Result<f64, String> {
    let x: f64 = parse_number(s)?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("must be a finite number, 0 or more, not {s}"))
    }
}

pub fn dropout_probability(s: &str) -> Result<f64, String> {
    let p: f64 = parse_number(s)?;
    // 1 would drop every value of the prompt: nothing left to train.
    if (0.0..1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("must be at least 0 and below 1, not {s}"))
    }
}

pub fn temperature(s: &str) -> Result<f32, String> {
    let t: f32 = parse_number(s)?;
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(format!("must be 0 (greedy) or a positive number, not {s}"))
    }
}

pub fn top_p(s: &str) -> Result<f32, String> {
    let p: f32 = parse_number(s)?;
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err(format!("must be above 0 and at most 1, not {s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_is_refused_where_it_does_not_run() {
        for dtype in [Precision::F16, Precision::Bf16] {
            let vulkan = DeviceArg {
                device: Some(ComputeBackend::Vulkan),
                dtype,
            };
            let message = vulkan.open(false).unwrap_err().to_string();
            assert!(message.contains("--dtype f32"), "{message}");
        }
        #[cfg(feature = "ndarray")]
        {
            let ndarray = DeviceArg {
                device: Some(ComputeBackend::NdArray),
                dtype: Precision::Bf16,
            };
            let message = ndarray.open(true).unwrap_err().to_string();
            assert!(
                message.contains("ndarray") && message.contains("bf16"),
                "{message}"
            );
        }
        assert!(DeviceArg::on(ComputeBackend::Flex).open(true).is_ok());
    }

    #[test]
    fn numeric_flags_refuse_values_that_would_break_a_run() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(positive("3e-2"), Ok(3e-2));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("NaN").is_err());
        assert_eq!(dropout_probability("0"), Ok(0.0));
        assert_eq!(dropout_probability("0.5"), Ok(0.5));
        for bad in ["1", "1.5", "-0.1", "NaN"] {
            assert!(dropout_probability(bad).is_err(), "{bad}");
        }
        assert_eq!(temperature("0"), Ok(0.0));
        assert!(temperature("-0.5").is_err());
        assert!(temperature("NaN").is_err());
        assert_eq!(top_p("1"), Ok(1.0));
        assert!(top_p("0").is_err());
        assert!(top_p("1.1").is_err());
    }
}
