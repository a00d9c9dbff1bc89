//! `water-pt modules` and `water-pt encode-config`: what is built in, and how to put a config
//! on a bridge line.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Args;

use crate::pt::bridge::KEY_CONFIG;
use crate::pt::catalogue::BUILTINS;

/// Lists the built-in modules, one per line: name, size, SHA-256, whether a bridge keys itself
/// with it, what it does.
pub fn list() -> Result<(), String> {
    println!(
        "{:<12} {:>8}  {:<64}  {:<10} about",
        "name", "bytes", "sha256", "bridge"
    );
    for b in BUILTINS {
        let keying = if b.bridge_config.is_some() {
            "self-keyed"
        } else {
            "no config"
        };
        println!(
            "{:<12} {:>8}  {}  {:<10} {}",
            b.name,
            b.wasm.len(),
            b.sha256_hex(),
            keying,
            b.about
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct EncodeConfigArgs {
    /// The config file (the bytes the module reads as /conf/watm.cfg).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Prints `water-config=<base64url>` for a config file.
pub fn encode_config(args: EncodeConfigArgs) -> Result<(), String> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| format!("cannot read config {}: {e}", args.file.display()))?;
    println!("{KEY_CONFIG}={}", URL_SAFE_NO_PAD.encode(bytes));
    Ok(())
}
