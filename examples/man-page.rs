//! Writes water-pt's man pages (roff, section 1) into a directory: `water-pt.1` and one page
//! per subcommand (`water-pt-client.1`, ...), generated from the same clap definition the
//! binary parses its command line with, so options and their help never drift apart.
//!
//! `cargo run --example man-page -- OUT_DIR` (scripts/release.sh does this for the .deb).

use clap::CommandFactory;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: man-page OUT_DIR");
        return ExitCode::from(2);
    };
    let cmd = water_pt::cli::Cli::command();
    match std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man-page: {e}");
            ExitCode::FAILURE
        }
    }
}
