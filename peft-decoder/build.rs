//! With the `tch` feature, compiles `csrc/` against the libtorch that torch-sys found and links:
//! what tch does not bind (PyTorch's fused AdamW kernel, and autograd given an output gradient).

use std::env;
use std::path::PathBuf;

fn main() {
    const SOURCES: [&str; 2] = ["csrc/fused_adamw.cpp", "csrc/autograd.cpp"];
    for source in SOURCES.iter().chain(&["csrc/failure.h"]) {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    // torch-sys (`links = "tch"`) passes its libtorch's library folder to its dependents (on
    // Linux and macOS); the headers lie beside it, in a pip install (`torch/lib`,
    // `torch/include`) as in a libtorch archive. Elsewhere torch-sys's own LIBTORCH says where.
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = match env::var_os("DEP_TCH_LIBTORCH_LIB") {
        Some(lib) => PathBuf::from(lib).join(".."),
        None => env::var_os("LIBTORCH").map(PathBuf::from).expect(
            "peft-decoder's tch feature compiles against libtorch's headers: set LIBTORCH to \
             the libtorch folder (the one holding include/ and lib/)",
        ),
    };
    let include = root.join("include");
    // Every libtorch tch 0.22 accepts (2.9 and later) is built with the C++11 ABI; torch-sys's
    // own default, overridden by the same variable.
    let cxx11_abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .files(SOURCES)
        .compile("peft_libtorch");
}
