//! Work that runs when a session ends.
//!
//! A front that only keeps per-connection statistics needs to learn how each
//! connection ended, not to wait for it: awaiting
//! [`super::SessionHandle::finished`] keeps a task per connection and costs a
//! wake-up of the async runtime when the connection ends. An [`EndHooks`]
//! instead runs its hooks on the session's own thread as the session ends.

use super::session::SessionEnd;
use crate::wasi::NetBytes;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A hook: how the session ended and what it moved on the network.
pub(crate) type EndHook = Box<dyn FnOnce(&SessionEnd, NetBytes) + Send>;

/// Hooks to run once with a session's end: by the session's thread when it
/// ends, or at once by whoever adds one after that.
#[derive(Default)]
pub(crate) struct EndHooks {
    state: Mutex<State>,
}

enum State {
    Running(Vec<EndHook>),
    Ended(SessionEnd, NetBytes),
}

impl Default for State {
    fn default() -> Self {
        State::Running(Vec::new())
    }
}

impl EndHooks {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a hook, or runs it here and now if the session has ended.
    pub fn add(&self, hook: EndHook) {
        let mut state = self.state();
        match &mut *state {
            State::Running(hooks) => hooks.push(hook),
            State::Ended(end, bytes) => {
                let (end, bytes) = (end.clone(), *bytes);
                // Not under the lock: the hook may do anything.
                drop(state);
                hook(&end, bytes);
            }
        }
    }

    /// Records the end and runs the hooks added so far. Later calls do nothing.
    pub fn run(&self, end: &SessionEnd, bytes: NetBytes) {
        let hooks = {
            let mut state = self.state();
            let hooks = match &mut *state {
                State::Running(hooks) => std::mem::take(hooks),
                State::Ended(..) => return,
            };
            *state = State::Ended(end.clone(), bytes);
            hooks
        };
        for hook in hooks {
            hook(end, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counting(calls: &Arc<AtomicUsize>, want: SessionEnd) -> EndHook {
        let calls = calls.clone();
        Box::new(move |end, bytes| {
            assert_eq!(*end, want);
            assert_eq!(bytes.read, 3);
            calls.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn hooks_added_before_or_after_the_end_run_once() {
        let hooks = EndHooks::default();
        let calls = Arc::new(AtomicUsize::new(0));
        hooks.add(counting(&calls, SessionEnd::Closed));
        hooks.add(counting(&calls, SessionEnd::Closed));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "nothing runs before the end"
        );
        let bytes = NetBytes {
            read: 3,
            written: 0,
        };
        hooks.run(&SessionEnd::Closed, bytes);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        hooks.add(counting(&calls, SessionEnd::Closed));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "a late hook runs at once");
        hooks.run(&SessionEnd::Cancelled, bytes);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "the end is recorded once");
    }

    #[test]
    fn a_hook_may_add_another() {
        let hooks = Arc::new(EndHooks::default());
        hooks.run(&SessionEnd::Closed, NetBytes::default());
        let again = hooks.clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let inner = ran.clone();
        hooks.add(Box::new(move |_, _| {
            again.add(Box::new(move |_, _| {
                inner.fetch_add(1, Ordering::SeqCst);
            }))
        }));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
