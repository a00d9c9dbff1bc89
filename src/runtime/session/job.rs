//! What a session starts from, who hears how its setup ended, and the answer its caller
//! gets if it never starts.

use super::SessionHandle;
use crate::runtime::module::Role;
use crate::runtime::net::NetPolicy;
use crate::runtime::Error;
use crate::sys::{self, AsFd, HostFd};
use crate::wasi::OpenSocket;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Bytes the runtime writes on the caller socket once the role call has
/// succeeded (or failed), before the module starts moving data. The SOCKS
/// front uses it to send its reply only once the transport is up, without
/// taking the socket back from the instance.
pub struct Replies {
    pub ready: Vec<u8>,
    pub failed: FailureReply,
}

/// Computes the bytes to send when setup failed, from the reason.
pub type FailureReply = Box<dyn FnOnce(&Error) -> Vec<u8> + Send>;

/// Everything one session needs.
pub(crate) struct Job {
    pub role: Role,
    /// The caller-side socket (`None` for a relay).
    pub caller: Option<CallerSocket>,
    /// The connection `water_accept` returns (listener and relay).
    pub inbound: Option<HostFd>,
    /// The remote `water_dial_fixed` dials.
    pub fixed_remote: Option<(String, String)>,
    pub config: Option<Arc<[u8]>>,
    pub policy: Arc<NetPolicy>,
    pub replies: Option<Replies>,
    /// Told how setup ended; taken by whoever ends it (the thread, or a refusal).
    pub watch: Option<SetupWatch>,
}

/// Called once with how a session's setup ended: the session's handle once the role call
/// succeeded and any reply was written, or why it failed.
pub type SetupHook = Box<dyn FnOnce(Result<&SessionHandle, Error>) + Send>;

/// Who learns how a session's setup ended.
pub(crate) enum SetupWatch {
    /// A task awaiting [`super::start`].
    Task(oneshot::Sender<Result<(), Error>>),
    /// Run on the session's thread before the worker starts, or on the starting thread if the
    /// session never reaches a thread ([`super::launch`]). No task has to be woken, so a
    /// front that only needs to count its connections spends no thread hand-over on them.
    Hook(SetupHook),
}

impl SetupWatch {
    pub(super) fn tell(self, outcome: Result<&SessionHandle, Error>) {
        match self {
            SetupWatch::Task(tx) => {
                let _ = tx.send(outcome.map(drop));
            }
            SetupWatch::Hook(hook) => hook(outcome),
        }
    }
}

/// The caller socket a session starts with.
pub(crate) enum CallerSocket {
    Open(HostFd),
    /// Opened when the module first writes to it or polls it for writing
    /// (see [`crate::wasi::LazySocket`]).
    OnFirstWrite(OpenSocket),
}

impl Job {
    /// Answers the caller of a session that never reached its thread: refused at admission,
    /// a role the module lacks, or no thread to run it. The thread answers every later
    /// failure itself, so a caller given [`Replies`] always hears why, and the front that
    /// made the job needs no descriptor of its own to answer with. A single non-blocking
    /// write: the reply is a few bytes on a connection nothing has written to yet. The
    /// job's watch then hears `e`.
    pub(super) fn refuse(mut self, e: Error) {
        if let (Some(replies), Some(CallerSocket::Open(fd))) = (self.replies.take(), &self.caller) {
            let reply = (replies.failed)(&e);
            let _ = sys::write_vectored(fd.as_fd(), &[std::io::IoSlice::new(&reply)]);
        }
        if let Some(watch) = self.watch.take() {
            watch.tell(Err(e));
        }
    }
}

/// A job on its way to a session thread. Dropped before the thread took it out (the thread
/// could not be started, and the closure holding this went with it), it refuses the job.
pub(super) struct Unstarted(Option<Job>);

impl Unstarted {
    pub fn new(job: Job) -> Self {
        Self(Some(job))
    }

    /// The job, for the thread that runs it.
    pub fn take(mut self) -> Job {
        self.0.take().expect("an unstarted job is taken once")
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.refuse(Error::Io(std::io::Error::other(
                "no thread could be started for the session",
            )));
        }
    }
}
