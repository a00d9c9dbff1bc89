//! A short run of the soak driver (`examples/soak/`, also run in full by `scripts/soak.sh`)
//! in the default test command: a few thousand short connections and a few dozen long ones
//! through a real `water-pt client` / `water-pt server` pair, with the same checks as the full
//! soak: every byte back intact, descriptors and threads of both processes back to their
//! baseline once the connections are gone, and no RSS growth from one long round to the next.

#[allow(dead_code)]
#[path = "../examples/soak/main.rs"]
mod soak;

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak_loses_nothing_and_leaks_nothing() {
    let bin =
        std::env::var("WATER_PT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_water-pt").into());
    let opts = soak::Opts::parse_from([
        "soak",
        "--bin",
        &bin,
        "--short",
        "3000",
        "--short-concurrency",
        "32",
        "--long",
        "40",
        "--long-bytes",
        "262144",
        "--long-rounds",
        "2",
        // Past the runtime's 10 s keep-alive of parked session threads.
        "--settle-secs",
        "25",
        "--io-timeout-secs",
        "30",
        "--phase-timeout-secs",
        "120",
    ]);
    let report = soak::run(&opts).await.expect("soak set-up");
    eprintln!("{}", report.table());
    assert_eq!(report.phases.len(), 3);
    assert_eq!(report.phases[0].connections, 3000);
    assert_eq!(report.phases[1].connections, 40);
    assert_eq!(report.phases[2].connections, 40);
    // Fresh, baseline, then one snapshot after each phase.
    assert_eq!(report.snapshots.len(), 5, "{:?}", report.snapshots);
    assert!(report.ok(), "{}", report.table());
}
