//! What the fused-operation tests share.

use burn::prelude::*;

/// Every CPU backend compiled in, by name: the fused operations are checked on each.
pub fn devices() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)] // pushed to when ndarray or tch is compiled in
    let mut devices = vec![("flex", Device::flex())];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    devices.push(("ndarray", Device::ndarray()));
    #[cfg(feature = "tch")]
    #[allow(deprecated)]
    devices.push(("tch", Device::libtorch()));
    devices
}

/// The same devices under autodiff, for backward passes and optimizer steps.
#[allow(dead_code)] // a test binary that runs no backward does not use it
pub fn autodiff_devices() -> Vec<(&'static str, Device)> {
    devices()
        .into_iter()
        .map(|(name, device)| (name, device.autodiff()))
        .collect()
}
