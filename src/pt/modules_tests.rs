//! Tests of the module store: where a module comes from, pins, caching and reloads.

use super::super::file_stamp::backdate;
use super::*;
use crate::runtime::RuntimeConfig;

fn store(dir: Option<PathBuf>) -> ModuleStore {
    ModuleStore::new(Runtime::new(RuntimeConfig::default()).unwrap(), dir)
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("water-modules-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn args(pairs: &[(&str, &str)]) -> BridgeArgs {
    BridgeArgs::from_pairs(pairs).unwrap()
}

const REVERSE: &[u8] = include_bytes!("../../watm/prebuilt/reverse.wasm");

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_file_unchanged_since_is_found_by_its_stamp_and_a_changed_one_is_read() {
    let dir = temp_dir("recent");
    let path = dir.join("m.wasm");
    std::fs::write(&path, crate::DEFAULT_MODULE).unwrap();
    backdate(&path, 60);
    let s = Arc::new(store(Some(dir.clone())));
    let by_name = args(&[("water-wasm", "m.wasm")]);
    assert!(s.recent.get(&path).is_none());
    let first = s.select_blocking_off(by_name.clone()).await.unwrap();
    // Only where a file's identity is known (see `sys::file_identity`); elsewhere every
    // lookup reads the file, and the rest holds all the same.
    let stamps = cfg!(unix);
    assert_eq!(
        s.recent.get(&path).is_some(),
        stamps,
        "remembered once read"
    );
    let again = s.select_blocking_off(by_name.clone()).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    // A pin the remembered module does not match is still refused.
    let wrong = args(&[("water-wasm", "m.wasm"), ("water-sha256", &"00".repeat(32))]);
    let err = s.select_blocking_off(wrong).await.unwrap_err();
    assert!(matches!(err, ModuleError::PinMismatch { .. }), "{err}");

    // Another module renamed over it: that module.
    let next = dir.join("m.next");
    std::fs::write(&next, REVERSE).unwrap();
    backdate(&next, 60);
    std::fs::rename(&next, &path).unwrap();
    let replaced = s.select_blocking_off(by_name.clone()).await.unwrap();
    assert_eq!(replaced.sha256(), sha256(REVERSE));

    // Rewritten in place just now: too fresh for a stamp, so read again every time.
    std::fs::write(&path, crate::DEFAULT_MODULE).unwrap();
    let rewritten = s.select_blocking_off(by_name.clone()).await.unwrap();
    assert!(
        Arc::ptr_eq(&rewritten, &first),
        "the same bytes as the first load"
    );
    assert!(
        s.recent.get(&path).is_none(),
        "a fresh file is not trusted by stamp"
    );
}

#[test]
fn default_pin_name_and_cache() {
    let dir = temp_dir("cache");
    let plain = crate::DEFAULT_MODULE;
    let hex = hex::encode(sha256(REVERSE));
    std::fs::write(dir.join("p.wasm"), plain).unwrap();
    std::fs::write(dir.join("r.wasm"), REVERSE).unwrap();
    std::fs::write(dir.join(format!("{hex}.wasm")), REVERSE).unwrap();
    let s = store(Some(dir.clone()));
    let builtin = s.select(&BridgeArgs::default()).unwrap();
    let named = s.select(&args(&[("water-wasm", "p.wasm")])).unwrap();
    assert!(Arc::ptr_eq(&builtin, &named), "same bytes share one module");
    let pinned = s.select(&args(&[("water-sha256", &hex)])).unwrap();
    assert_eq!(pinned.sha256_hex(), hex);
    let by_name = s.select(&args(&[("water-wasm", "r.wasm")])).unwrap();
    assert!(Arc::ptr_eq(&pinned, &by_name));
    assert_eq!(s.lock().len(), 3, "one cache entry per file");

    let wrong = "00".repeat(32);
    let err = s
        .select(&args(&[("water-wasm", "p.wasm"), ("water-sha256", &wrong)]))
        .unwrap_err();
    assert_eq!(err.kind(), "pin-mismatch", "{err}");

    std::fs::write(dir.join("bad.wasm"), b"not wasm").unwrap();
    let err = s.select(&args(&[("water-wasm", "bad.wasm")])).unwrap_err();
    assert_eq!(err.kind(), "module-refused", "{err}");
    let err = s
        .select(&args(&[("water-wasm", "missing.wasm")]))
        .unwrap_err();
    assert_eq!(err.kind(), "module-missing", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}", dir.join("missing.wasm").display())),
        "{msg}"
    );
    assert!(msg.contains("put the module there"), "{msg}");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let err = s
        .select(&args(&[(
            "water-wasm",
            &format!("{}", dir.join("sub").display()),
        )]))
        .unwrap_err();
    assert_eq!(err.kind(), "module-unreadable", "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The catalogue answers names and pins of built-in modules with no file and no module
/// directory at all; a pin of anything else says where the file should be.
#[test]
fn built_in_modules_need_no_files() {
    let s = store(None);
    for b in catalogue::BUILTINS {
        let hex = b.sha256_hex();
        for pairs in [
            vec![("water-sha256", hex.as_str())],
            vec![("water-wasm", b.name)],
            vec![
                ("water-wasm", &*format!("{}.wasm", b.name)),
                ("water-sha256", &hex),
            ],
            vec![
                ("water-wasm", "/nonexistent/x.wasm"),
                ("water-sha256", &hex),
            ],
        ] {
            let w = s
                .select(&args(&pairs))
                .unwrap_or_else(|e| panic!("{pairs:?}: {e}"));
            assert_eq!(w.sha256(), b.sha256(), "{pairs:?}");
        }
    }
    let ss = s.select(&args(&[("water-wasm", "shadowsocks")])).unwrap();
    assert!(
        s.bridge_config(&ss).unwrap().is_some(),
        "shadowsocks is self-keyed"
    );
    let plain = s.select(&BridgeArgs::default()).unwrap();
    assert_eq!(s.bridge_config(&plain).unwrap(), None);

    let dir = temp_dir("pin-missing");
    let s = store(Some(dir.clone()));
    let unknown = "ab".repeat(32);
    let err = s.select(&args(&[("water-sha256", &unknown)])).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), "module-missing", "{msg}");
    assert!(
        msg.contains(&format!(
            "{}",
            dir.join(format!("{unknown}.wasm")).display()
        )),
        "{msg}"
    );
    assert!(msg.contains("plain, shadowsocks"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn names_need_a_module_dir() {
    let s = store(None);
    let err = s.select(&args(&[("water-wasm", "x.wasm")])).unwrap_err();
    assert_eq!(err.kind(), "no-module-dir");
    let err = s
        .select(&args(&[("water-sha256", &"ab".repeat(32))]))
        .unwrap_err();
    assert_eq!(err.kind(), "no-module-dir");
}
