//! Replays the fuzz seeds and every saved fuzz regression of the WASI harness through the
//! normal test suite, so the stable toolchain (and CI) checks them without cargo-fuzz.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use water_pt::fuzzing::{wasi_input, WasiHarness, WASI_HARNESS_WAT};
use water_pt::runtime::SessionEnd;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Each run checks that the process's descriptor and thread counts come back down, so the
/// tests of this file take turns instead of running their harnesses side by side.
static TURN: Mutex<()> = Mutex::new(());

fn harness() -> (MutexGuard<'static, ()>, WasiHarness) {
    let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    (
        turn,
        WasiHarness::new(&wat::parse_str(WASI_HARNESS_WAT).unwrap()),
    )
}

#[test]
fn wasi_seeds_and_regressions_end_on_their_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs: Vec<PathBuf> = files(&root.join("corpus/wasi_guest_memory"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
        })
        .collect();
    inputs.extend(files(&root.join("regressions/wasi_guest_memory")));
    assert!(!inputs.is_empty(), "seeds are committed");
    let (_turn, h) = harness();
    for path in inputs {
        let run = h.run(&std::fs::read(&path).unwrap());
        assert!(!run.stopped, "{}: {run:?}", path.display());
    }
}

#[test]
fn wasi_harness_runs_its_program() {
    let (_turn, h) = harness();
    // No records: the program only opens its config and returns 0.
    assert_eq!(h.run(&wasi_input(b"", &[])).end, SessionEnd::Closed);
    // proc_exit(7) as the one record traps, which ends the session as a failure.
    let exit = wasi_input(b"", &[(21, [7; 11])]);
    match h.run(&exit).end {
        SessionEnd::Failed(why) => assert!(why.contains("proc_exit(7)"), "{why}"),
        other => panic!("{other:?}"),
    }
    // An empty or truncated config is a program with no records.
    assert_eq!(h.run(b"").end, SessionEnd::Closed);
    assert_eq!(h.run(&[0xff]).end, SessionEnd::Closed);
}

#[test]
fn wasi_seeds_run_to_their_last_record() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/wasi_guest_memory");
    let (_turn, h) = harness();
    // The tour makes every call with valid arguments and returns 0; the edge cases end with
    // proc_exit(3), so reaching it shows no earlier record trapped.
    let tour = h.run(&std::fs::read(dir.join("seed-tour")).unwrap());
    assert_eq!(tour.end, SessionEnd::Closed);
    match h.run(&std::fs::read(dir.join("seed-edges")).unwrap()).end {
        SessionEnd::Failed(why) => assert!(why.contains("proc_exit(3)"), "{why}"),
        other => panic!("{other:?}"),
    }
}
