//! Choosing the compute backend at run time.
//!
//! Burn 0.22 puts the backend in the [`Device`]: model code is backend-free and the choice is a
//! string from the command line or the environment. Each backend is a cargo feature of this
//! crate; naming one that was not compiled in is an error that says which feature enables it.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;

/// A compute backend this toolkit knows how to name (not Burn's `Backend` trait, which
/// model code never names: the choice lives in the [`Device`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ComputeBackend {
    /// Pure-Rust CPU backend; always the fallback.
    Flex,
    /// The ndarray CPU backend (deprecated upstream, kept for comparison).
    NdArray,
    /// wgpu on Vulkan: GPUs without CUDA.
    Vulkan,
    /// LibTorch on the CPU.
    Tch,
    /// LibTorch on CUDA device 0.
    TchCuda,
    /// CubeCL's native CUDA backend.
    Cuda,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error(
        "backend `{backend}` is not compiled into this binary; rebuild with `--features {feature}`"
    )]
    NotCompiled {
        backend: ComputeBackend,
        feature: &'static str,
    },
    #[error("unknown backend `{0}`; expected one of: flex, ndarray, vulkan, tch, tch-cuda, cuda")]
    Unknown(String),
}

impl ComputeBackend {
    pub const ALL: [ComputeBackend; 6] = [
        ComputeBackend::Flex,
        ComputeBackend::NdArray,
        ComputeBackend::Vulkan,
        ComputeBackend::Tch,
        ComputeBackend::TchCuda,
        ComputeBackend::Cuda,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ComputeBackend::Flex => "flex",
            ComputeBackend::NdArray => "ndarray",
            ComputeBackend::Vulkan => "vulkan",
            ComputeBackend::Tch => "tch",
            ComputeBackend::TchCuda => "tch-cuda",
            ComputeBackend::Cuda => "cuda",
        }
    }

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            ComputeBackend::Flex => "flex",
            ComputeBackend::NdArray => "ndarray",
            ComputeBackend::Vulkan => "vulkan",
            ComputeBackend::Tch | ComputeBackend::TchCuda => "tch",
            ComputeBackend::Cuda => "cuda",
        }
    }

    pub fn is_compiled(self) -> bool {
        match self {
            ComputeBackend::Flex => cfg!(feature = "flex"),
            ComputeBackend::NdArray => cfg!(feature = "ndarray"),
            ComputeBackend::Vulkan => cfg!(feature = "vulkan"),
            ComputeBackend::Tch | ComputeBackend::TchCuda => cfg!(feature = "tch"),
            ComputeBackend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Backends compiled into this binary that run on the CPU, in preference order.
    /// Tests run on each of them.
    pub fn compiled_cpu() -> Vec<ComputeBackend> {
        Self::ALL
            .into_iter()
            .filter(|b| b.is_cpu() && b.is_compiled())
            .collect()
    }

    /// Whether the backend computes on the CPU, its tensors in the host's memory.
    pub fn is_cpu(self) -> bool {
        match self {
            ComputeBackend::Flex | ComputeBackend::NdArray | ComputeBackend::Tch => true,
            ComputeBackend::Vulkan | ComputeBackend::TchCuda | ComputeBackend::Cuda => false,
        }
    }

    /// The best backend compiled in and usable here: a CUDA one only where an NVIDIA driver is
    /// loaded, then Vulkan if compiled in, else the fastest CPU one.
    ///
    /// Compiling Vulkan in is taken as the wish to use it; whether a GPU answers is only known
    /// when the first tensor is created.
    pub fn best_available() -> ComputeBackend {
        [
            ComputeBackend::Cuda,
            ComputeBackend::TchCuda,
            ComputeBackend::Vulkan,
            ComputeBackend::Flex,
            ComputeBackend::Tch,
            ComputeBackend::NdArray,
        ]
        .into_iter()
        .find(|b| b.is_compiled() && (!b.needs_nvidia() || nvidia_driver_loaded()))
        .unwrap_or(ComputeBackend::Flex)
    }

    fn needs_nvidia(self) -> bool {
        matches!(self, ComputeBackend::Cuda | ComputeBackend::TchCuda)
    }

    /// A backend named on a command line, refused unless compiled in (the error names the
    /// feature that compiles it).
    pub fn parse_compiled(name: &str) -> Result<ComputeBackend, DeviceError> {
        let backend: ComputeBackend = name.parse()?;
        backend.device()?;
        Ok(backend)
    }

    /// The Burn device for this backend, or an error naming the missing feature.
    pub fn device(self) -> Result<Device, DeviceError> {
        if !self.is_compiled() {
            return Err(DeviceError::NotCompiled {
                backend: self,
                feature: self.feature(),
            });
        }
        Ok(self.device_unchecked())
    }

    #[allow(deprecated, unreachable_code)] // ndarray and tch devices are deprecated upstream
    fn device_unchecked(self) -> Device {
        match self {
            #[cfg(feature = "flex")]
            ComputeBackend::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            ComputeBackend::NdArray => Device::ndarray(),
            #[cfg(feature = "vulkan")]
            ComputeBackend::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "tch")]
            ComputeBackend::Tch => Device::libtorch(),
            #[cfg(feature = "tch")]
            ComputeBackend::TchCuda => Device::libtorch_cuda(0),
            #[cfg(feature = "cuda")]
            ComputeBackend::Cuda => Device::cuda(0),
            #[allow(unreachable_patterns)]
            other => unreachable!("{other} is checked to be compiled in"),
        }
    }
}

/// Whether the NVIDIA kernel driver is loaded (Linux), without touching any CUDA library.
fn nvidia_driver_loaded() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
}

impl fmt::Display for ComputeBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ComputeBackend {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        ComputeBackend::ALL
            .into_iter()
            .find(|b| b.name() == wanted)
            .ok_or_else(|| DeviceError::Unknown(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for backend in ComputeBackend::ALL {
            assert_eq!(backend.name().parse::<ComputeBackend>().unwrap(), backend);
        }
        assert_eq!(
            "metal".parse::<ComputeBackend>(),
            Err(DeviceError::Unknown("metal".into()))
        );
    }

    #[test]
    fn missing_backend_names_its_feature() {
        let missing = ComputeBackend::ALL.into_iter().find(|b| !b.is_compiled());
        if let Some(backend) = missing {
            let message = backend.device().unwrap_err().to_string();
            assert!(
                message.contains(&format!("--features {}", backend.feature())),
                "{message}"
            );
        }
        assert!(ComputeBackend::Flex.device().is_ok() || !ComputeBackend::Flex.is_compiled());
    }

    #[test]
    fn default_backend_is_usable_here() {
        let best = ComputeBackend::best_available();
        assert!(best.is_compiled());
        if !nvidia_driver_loaded() {
            assert!(
                !best.needs_nvidia(),
                "picked {best} without an NVIDIA driver"
            );
        }
    }
}
