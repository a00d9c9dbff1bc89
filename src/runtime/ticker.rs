//! The runtime's clock thread: epoch ticks and forced stops.
//!
//! wasmtime's epoch interruption lets a store run a callback whenever the
//! engine's epoch passes its deadline. One thread per runtime advances the
//! epoch at a fixed period while connections are open (it sleeps when there
//! are none), which gives every instance two guarantees: a module computing
//! without ever calling the host is stopped after its budget of ticks, and a
//! module asked to stop that ignores its control pipe is stopped when its
//! grace period ends.

use super::session::SessionShared;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::Engine;

#[derive(Default)]
struct State {
    live: usize,
    /// Instances to force-stop at the given time.
    pending: Vec<(Instant, Weak<SessionShared>)>,
    shutdown: bool,
}

pub(crate) struct Ticker {
    state: Mutex<State>,
    cv: Condvar,
    pub period: Duration,
}

impl Ticker {
    pub fn start(engine: Engine, period: Duration) -> std::io::Result<Arc<Self>> {
        let ticker = Arc::new(Self {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            period,
        });
        let t = ticker.clone();
        std::thread::Builder::new()
            .name("water-ticker".into())
            .spawn(move || t.run(engine))?;
        Ok(ticker)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, engine: Engine) {
        let mut next = Instant::now() + self.period;
        loop {
            let mut st = self.lock();
            loop {
                if st.shutdown {
                    return;
                }
                if st.live == 0 && st.pending.is_empty() {
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    next = Instant::now() + self.period;
                    continue;
                }
                let now = Instant::now();
                if now >= next {
                    break;
                }
                st = self
                    .cv
                    .wait_timeout(st, next - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            next = Instant::now() + self.period;
            let now = Instant::now();
            let mut due = Vec::new();
            st.pending.retain(|(at, s)| {
                if *at <= now {
                    due.push(s.clone());
                    false
                } else {
                    true
                }
            });
            drop(st);
            engine.increment_epoch();
            for s in due.iter().filter_map(Weak::upgrade) {
                s.force_stop(&engine);
            }
        }
    }

    pub fn session_started(&self) {
        let mut st = self.lock();
        st.live += 1;
        if st.live == 1 {
            self.cv.notify_all();
        }
    }

    pub fn session_ended(&self) {
        let mut st = self.lock();
        st.live = st.live.saturating_sub(1);
    }

    pub fn schedule_force_stop(&self, at: Instant, session: Weak<SessionShared>) {
        let mut st = self.lock();
        st.pending.push((at, session));
        if st.pending.len() == 1 {
            self.cv.notify_all();
        }
    }

    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cv.notify_all();
    }
}
