//! Command-line arguments every tool shares: the compute backend, and counts that must be
//! positive.

use clap::Args;

use crate::backend::ComputeBackend;

/// The compute backend: any compiled in; by default the best one.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArg {
    /// flex, ndarray, vulkan, tch, tch-cuda or cuda (each needs its cargo feature).
    #[arg(long, value_parser = parse_backend)]
    pub device: Option<ComputeBackend>,
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
