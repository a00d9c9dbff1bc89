//! The runtime's clock thread: epoch ticks and session deadlines.
//!
//! wasmtime's epoch interruption lets a store run a callback whenever the
//! engine's epoch passes its deadline. One thread per runtime advances the
//! epoch at a fixed period while connections are open (it sleeps when there
//! are none), which gives every instance three guarantees: a module computing
//! without ever calling the host is stopped after its budget of ticks, a
//! module asked to stop that ignores its control pipe is stopped when its
//! grace period ends, and a connection that is not ready when its setup
//! deadline passes is stopped.

use super::session::SessionShared;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// What happens to a session when its deadline passes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    /// The grace period after a stop request ended: force the stop.
    StopGrace,
    /// Setup time is up: force a stop if the connection is not ready yet.
    Setup,
}

/// One scheduled deadline; ordered by time (then by scheduling order).
struct Due {
    at: Instant,
    seq: u64,
    what: Deadline,
    session: Weak<SessionShared>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Deadlines of ended sessions tolerated beyond twice the live sessions.
const PRUNE_SLACK: usize = 64;

#[derive(Default)]
struct State {
    live: usize,
    /// Deadlines, earliest first. Entries of sessions that already ended
    /// stay until due or until they outnumber the live sessions (see
    /// [`Ticker::run`]).
    pending: BinaryHeap<Reverse<Due>>,
    seq: u64,
    shutdown: bool,
}

impl State {
    /// Whether the thread waits without a timeout (see [`Ticker::run`]), the one wait that
    /// needs a notification to end. Otherwise it ticks anyway, and a deadline is only ever
    /// checked on a tick: waking it for every new session or deadline would cost a context
    /// switch per connection for nothing.
    fn asleep(&self) -> bool {
        self.live == 0 && self.pending.is_empty()
    }
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
                if st.asleep() {
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
            // A deadline's weak reference keeps its session's allocation,
            // small but scattered through the heap: after a flood closes,
            // thousands of them would hold the heap's pages for the whole
            // setup timeout. So once they outnumber the live sessions, the
            // entries of sessions that are gone are dropped, at most once a
            // tick whatever the rate of sessions.
            if st.pending.len() > 2 * st.live + PRUNE_SLACK {
                st.pending.retain(|Reverse(d)| d.session.strong_count() > 0);
                if st.pending.len() < st.pending.capacity() / 4 {
                    st.pending.shrink_to_fit();
                }
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while st.pending.peek().is_some_and(|Reverse(d)| d.at <= now) {
                if let Some(Reverse(d)) = st.pending.pop() {
                    due.push(d);
                }
            }
            drop(st);
            engine.increment_epoch();
            for d in due {
                if let Some(s) = d.session.upgrade() {
                    s.deadline_passed(d.what, &engine);
                }
            }
        }
    }

    pub fn session_started(&self) {
        let mut st = self.lock();
        let was_asleep = st.asleep();
        st.live += 1;
        if was_asleep {
            self.cv.notify_all();
        }
    }

    pub fn session_ended(&self) {
        let mut st = self.lock();
        st.live = st.live.saturating_sub(1);
    }

    pub fn schedule(&self, at: Instant, what: Deadline, session: Weak<SessionShared>) {
        let mut st = self.lock();
        let was_asleep = st.asleep();
        st.seq += 1;
        let seq = st.seq;
        st.pending.push(Reverse(Due {
            at,
            seq,
            what,
            session,
        }));
        if was_asleep {
            self.cv.notify_all();
        }
    }

    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.cv.notify_all();
    }
}
