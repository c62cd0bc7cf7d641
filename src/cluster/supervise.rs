//! The supervisor's thread: started with its first workers, stopped by a
//! wake-up; shared by a one-pool [`super::Cluster`] and each pool of a
//! pool file ([`super::Pools`]).

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use super::supervisor::Supervisor;
use crate::error::{Error, Result};
use crate::protocol::Control;
use crate::wakeup::Wakeup;

/// A running supervisor thread.
pub(super) struct SupervisorThread {
    /// Triggered to stop it: it retires its workers and ends.
    pub stop: Wakeup,
    /// Triggered when it ends on its own (it gave up).
    pub done: Wakeup,
    pub thread: Option<JoinHandle<Result<()>>>,
}

impl SupervisorThread {
    /// Starts `sup`'s workers on a new thread named `name` and returns once
    /// all have registered, or with the error that stopped them. It then
    /// serves `control` (woken by `wake`) until stopped.
    pub fn start(mut sup: Supervisor, control: Receiver<Control>, wake: Wakeup, name: &str) -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, done) = (Wakeup::new()?, Wakeup::new()?);
        let thread = {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    crate::sys::block_process_signals();
                    // Workers are forked from this thread: PDEATHSIG follows it.
                    // SIGCHLD is watched before the first fork: a worker that
                    // dies as soon as it is started must not go unnoticed.
                    let started = Wakeup::new()
                        .and_then(|w| w.on_signals(&[signal_hook::consts::SIGCHLD]))
                        .and_then(|children| sup.start_workers().map(|()| children));
                    let children = match started {
                        Ok(children) => children,
                        Err(e) => {
                            let _ = sup.shutdown();
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let served = sup.serve(&children, &stop, &control, &wake);
                    let stopped = sup.shutdown();
                    done.trigger();
                    served.and(stopped)
                })
                .map_err(Error::io("starting the supervisor thread"))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(SupervisorThread { stop, done, thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(Error::ThreadDiedAtStart { thread: "supervisor" }),
        }
    }

    /// Stops it (its workers finish their jobs and leave) and returns its
    /// error if it had given up on its own.
    pub fn stop(&mut self) -> Result<()> {
        self.stop.trigger();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::ThreadPanicked { thread: "supervisor" }),
            None => Ok(()),
        }
    }
}
