//! Process lifecycle: signals and stdin, as pluggable transports handle them.
//!
//! The convention tor and the other transports follow: SIGTERM means exit
//! now; the first SIGINT means stop accepting and let open connections
//! finish; a second SIGINT means exit now. When tor sets
//! `TOR_PT_EXIT_ON_STDIN_CLOSE=1`, end-of-file on stdin (tor has exited)
//! also means exit now. On Windows, Ctrl-C plays SIGINT's part and
//! Ctrl-Break (or closing the console) SIGTERM's; tor there closes stdin
//! and then terminates the process (see [`crate::sys::LifecycleSignals`]).

use crate::sys::{LifecycleSignal, LifecycleSignals};
use std::io::Read;
use tokio::sync::watch;

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
}

impl Shutdown {
    /// Installs the signal handlers (and, if asked, the stdin watcher).
    /// Must be called inside a tokio runtime.
    pub fn install(exit_on_stdin_close: bool) -> std::io::Result<Self> {
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
                        tracing::info!("{name}: no longer accepting; waiting for open connections ({name} again to exit now)");
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
                    tracing::info!("stdin closed: exiting");
                    tx.send_replace(Phase::Exit);
                })?;
        }
        Ok(Self { rx })
    }

    /// A handle that never changes phase (for library use and tests).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(Phase::Running);
        std::mem::forget(tx);
        Self { rx }
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
