//! Tells the crate whether this compiler has the AVX-512 intrinsics (stable since Rust 1.89), so
//! the package still builds with its declared minimum Rust, without the AVX-512 scoring kernel.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(netsentinel_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // "rustc 1.95.0 (59807616e 2026-04-14)" -> 95
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            let version = v.split_whitespace().nth(1)?.to_owned();
            version.split('.').nth(1)?.parse::<u32>().ok()
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo::rustc-cfg=netsentinel_avx512");
    }
}
