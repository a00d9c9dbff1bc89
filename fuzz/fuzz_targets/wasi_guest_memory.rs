//! The WASI host's handling of guest memory and descriptors, through a real instance.
//!
//! The input is the harness module's config (see `water_pt::fuzzing::WasiHarness`): an image
//! copied into linear memory, then call records naming host functions with fuzzer-chosen
//! pointers, lengths and descriptors. The instance holds a real socket pair, a loopback TCP
//! connection and the config preopen.
//!
//! Properties: no host panic (libfuzzer aborts on any panic, in any thread); every call returns
//! an errno or traps cleanly (a trap ends the session, which the harness then observes); no run
//! blocks: each must end on its own within the harness's limit.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use water_pt::fuzzing::{WasiHarness, WASI_HARNESS_WAT};

fn harness() -> &'static WasiHarness {
    static H: OnceLock<WasiHarness> = OnceLock::new();
    H.get_or_init(|| {
        let wasm = wat::parse_str(WASI_HARNESS_WAT).expect("harness WAT");
        WasiHarness::new(&wasm)
    })
}

fuzz_target!(|data: &[u8]| {
    let run = harness().run(data);
    assert!(
        !run.stopped,
        "a run blocked until the harness stopped it: {run:?}"
    );
});
