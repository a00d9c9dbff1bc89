//! The start-up check: a module's init run once, on a session thread, before a bridge
//! accepts anything.

use super::{instantiate, new_store, Job, SessionEnd, SessionShared, READY};
use crate::runtime::module::{Role, Watm};
use crate::runtime::net::NetPolicy;
use crate::runtime::Error;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Instantiates `watm` with `config` on a session thread and runs it through its init (v1:
/// `watm_init_v1`), then drops the instance. A bridge does this at start-up so that a module
/// that refuses its config fails the launch with the module's own words (what it wrote to
/// stderr) instead of failing every connection later. Bounded like a connection's setup.
pub(crate) async fn check_init(
    runtime: &crate::runtime::Runtime,
    watm: Arc<Watm>,
    config: Option<Arc<[u8]>>,
) -> Result<(), String> {
    let rt = runtime.inner().clone();
    let permit = rt.admit().map_err(|e| e.to_string())?;
    let shared = Arc::new(
        SessionShared::new(permit.id, rt.limits.setup_timeout).map_err(|e| e.to_string())?,
    );
    let (tx, rx) = oneshot::channel();
    let thread_rt = rt.clone();
    let session = shared.clone();
    rt.threads
        .execute(Box::new(move || {
            let mut job = Job {
                role: Role::Listener,
                caller: None,
                inbound: None,
                fixed_remote: None,
                config,
                policy: Arc::new(NetPolicy::default()),
                replies: None,
                watch: None,
            };
            let mut store = new_store(&thread_rt, &mut job, session.clone());
            store.data_mut().wasi.captured_stderr = Some(String::new());
            let result = instantiate(&watm, &mut store)
                .and_then(|()| watm.driver().init(&mut store))
                .map_err(|e| {
                    let e = session.cut_short().unwrap_or(e);
                    with_module_words(&e, store.data_mut().wasi.captured_stderr.take())
                });
            session.end_setup(READY);
            thread_rt.residency.retire(store);
            drop(permit);
            session.done.send_replace(Some(SessionEnd::Closed));
            let _ = tx.send(result);
        }))
        .map_err(|e| e.to_string())?;
    shared.arm_setup_deadline(&rt);
    rx.await
        .unwrap_or_else(|_| Err("the start-up check ended without a result".into()))
}

/// The error, followed by what the module wrote to stderr (its non-empty lines, joined), if
/// anything.
fn with_module_words(e: &Error, said: Option<String>) -> String {
    let lines: Vec<_> = said
        .iter()
        .flat_map(|s| s.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.is_empty() {
        true => e.to_string(),
        false => format!("{e}; the module says: {}", lines.join("; ")),
    }
}
