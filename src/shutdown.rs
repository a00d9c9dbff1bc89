//! Process lifecycle: signals and stdin, as pluggable transports handle them.
//!
//! The convention tor and the other transports follow: SIGTERM means exit
//! now; the first SIGINT means stop accepting and let open connections
//! finish; a second SIGINT means exit now. When tor sets
//! `TOR_PT_EXIT_ON_STDIN_CLOSE=1`, end-of-file on stdin asks for the same
//! graceful exit as the first SIGINT (the managed-proxy specification's
//! "gracefully exit"; tor itself follows the close with SIGTERM, arti with
//! a kill after a few seconds). On Windows, Ctrl-C plays SIGINT's part and
//! Ctrl-Break (or closing the console) SIGTERM's; tor there closes stdin
//! and then terminates the process (see [`crate::sys::LifecycleSignals`]).
//!
//! Letting connections finish is bounded: a tor connection can stay open
//! for hours, and a module may never end on its own. After the drain time
//! ([`Shutdown::drain`]) every session still open is asked to stop, then
//! forced after the runtime's stop grace, and the process exits.

#[cfg(feature = "runtime")]
use crate::runtime::Runtime;
use crate::sys::{LifecycleSignal, LifecycleSignals};
use std::io::Read;
use std::time::Duration;
use tokio::sync::watch;

/// How long open connections may take to finish once draining began, unless
/// `--shutdown-timeout-secs` says otherwise.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

#[cfg(feature = "runtime")]
/// Beyond the stop grace, how long sessions asked to stop may take to end
/// before the process exits without them (their threads end with it).
const STOP_MARGIN: Duration = Duration::from_secs(1);

#[cfg(feature = "runtime")]
/// How often the stop is repeated while waiting for sessions to end, for a
/// session whose setup began just as the others were stopped (a SOCKS
/// handshake that was under way when draining began).
const STOP_REPEAT: Duration = Duration::from_millis(200);

/// What the process has been asked to do.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// Stop accepting; exit once open connections are done.
    Draining,
    /// Exit now.
    Exit,
}

/// Receives lifecycle requests; cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<Phase>,
    /// How long open connections may take to finish once draining began.
    drain: Duration,
}

impl Shutdown {
    /// Installs the signal handlers (and, if asked, the stdin watcher);
    /// open connections get `drain` to finish once draining began.
    /// Must be called inside a tokio runtime.
    pub fn install(exit_on_stdin_close: bool, drain: Duration) -> std::io::Result<Self> {
        let (tx, rx) = watch::channel(Phase::Running);
        let mut signals = LifecycleSignals::install()?;
        let tx_sig = tx.clone();
        tokio::spawn(async move {
            while let Some(sig) = signals.recv().await {
                let name = sig.name();
                // The phase changes before the log line, so whoever reads
                // the line can rely on the new phase.
                match sig {
                    LifecycleSignal::Interrupt if *tx_sig.borrow() == Phase::Running => {
                        tx_sig.send_replace(Phase::Draining);
                        tracing::info!(
                            "{name}: no longer accepting; waiting up to {}s for open connections ({name} again to exit now)",
                            drain.as_secs()
                        );
                    }
                    LifecycleSignal::Interrupt => {
                        tx_sig.send_replace(Phase::Exit);
                        tracing::info!("second {name}: exiting");
                    }
                    LifecycleSignal::Terminate => {
                        tx_sig.send_replace(Phase::Exit);
                        tracing::info!("{name}: exiting");
                    }
                }
            }
        });
        if exit_on_stdin_close {
            // A plain thread: tokio's stdin is not cancellable either, and
            // this one lives for the whole process anyway.
            std::thread::Builder::new()
                .name("stdin-watch".into())
                .spawn(move || {
                    let mut buf = [0u8; 256];
                    let mut stdin = std::io::stdin();
                    loop {
                        match stdin.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(_) => break,
                        }
                    }
                    // A SIGINT may have begun draining already; then this
                    // changes nothing.
                    if tx.send_if_modified(|p| {
                        let running = *p == Phase::Running;
                        if running {
                            *p = Phase::Draining;
                        }
                        running
                    }) {
                        tracing::info!(
                            "stdin closed: no longer accepting; waiting up to {}s for open connections",
                            drain.as_secs()
                        );
                    }
                })?;
        }
        Ok(Self { rx, drain })
    }

    /// A handle that never changes phase (for library use and tests).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(Phase::Running);
        std::mem::forget(tx);
        Self {
            rx,
            drain: DEFAULT_DRAIN,
        }
    }

    /// How long open connections may take to finish once draining began.
    pub fn drain_time(&self) -> Duration {
        self.drain
    }

    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// Resolves once the phase is at least `phase`.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|p| *p >= phase).await;
    }
}

#[cfg(feature = "runtime")]
impl Shutdown {
    /// Once accepting has ended: waits for `runtime`'s open connections to
    /// end, for the drain time at most; then asks every one still open to
    /// stop (a module that ignores the request is forced after the stop
    /// grace) and waits for that, bounded too. Returns at once on `Exit`.
    pub async fn drain(&self, runtime: &Runtime) {
        tokio::select! {
            _ = runtime.wait_idle() => return,
            _ = self.reached(Phase::Exit) => return,
            _ = tokio::time::sleep(self.drain_time()) => {}
        }
        tracing::info!(
            "{} connection(s) still open after {}s of draining: stopping them",
            runtime.live_connections(),
            self.drain_time().as_secs()
        );
        let give_up = tokio::time::Instant::now() + runtime.limits().stop_grace + STOP_MARGIN;
        let stopped = async {
            loop {
                runtime.stop_all();
                if tokio::time::timeout(STOP_REPEAT, runtime.wait_idle())
                    .await
                    .is_ok()
                {
                    return;
                }
            }
        };
        tokio::select! {
            _ = stopped => {}
            _ = self.reached(Phase::Exit) => {}
            _ = tokio::time::sleep_until(give_up) => tracing::warn!(
                "{} connection(s) did not end when stopped; exiting without them",
                runtime.live_connections()
            ),
        }
    }
}
