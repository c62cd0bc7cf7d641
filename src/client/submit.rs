//! Jobs handed over without waiting: [`Client::submit`] returns a
//! [`JobHandle`] to wait on later, [`Client::submit_with`] calls a function
//! with the result. What an event loop (Python's asyncio, say) builds on: no
//! thread of the caller's waits, and none is started per job. Either can be
//! cancelled ([`JobHandle::cancel`], [`Cancel::cancel`]).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::submitter::Submitter;
use super::{Client, JobRequest, Route};
use crate::error::{Error, Result};
use crate::protocol::{Command, CommandFrame};
use crate::wakeup::Wakeup;

/// What a submitted job's result is handed to, once.
pub type Done = Box<dyn FnOnce(Result<Vec<u8>>) + Send + 'static>;

/// A job in flight: [`JobHandle::wait`] for its result.
#[must_use = "a job's result is only seen through its handle"]
pub struct JobHandle {
    slot: Arc<Slot>,
    cancel: Cancel,
}

/// Cancels a submitted job: see [`Cancel::cancel`].
#[derive(Clone)]
pub struct Cancel {
    token: Arc<Token>,
    queue: Option<Arc<Queue>>,
}

impl Cancel {
    /// Cancels the job, unless its result came first (then false). Its
    /// result is `Err(Error::Cancelled)`, given at once (for
    /// [`Client::submit_with`], on this thread). A job not sent yet is never
    /// sent; one sent is cancelled at the broker too: taken out of its
    /// queue, or its worker's handler told (plugins built against
    /// plugin-api 0.1.1 see it). A client of several brokers does not tell
    /// them: its job runs on, its answer dropped.
    pub fn cancel(&self) -> bool {
        let (done, sent_as) = {
            let mut state = self.token.lock();
            (state.done.take(), state.req_id)
        };
        let Some(done) = done else { return false };
        if let (Some(queue), Some(id)) = (&self.queue, sent_as) {
            queue.cancel_sent(id);
        }
        done(Err(Error::Cancelled));
        true
    }
}

/// A submitted job's answer-to-be, shared by the thread that sends it and
/// whoever may cancel it: whichever comes first takes `done`.
#[derive(Default)]
pub(super) struct Token(Mutex<TokenState>);

#[derive(Default)]
struct TokenState {
    done: Option<Done>,
    /// The request id it went out under (local transport).
    req_id: Option<u64>,
}

impl Token {
    pub(super) fn new(done: Done) -> Token {
        Token(Mutex::new(TokenState { done: Some(done), req_id: None }))
    }

    fn lock(&self) -> MutexGuard<'_, TokenState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the result over, unless the job was cancelled (then it is dropped).
    pub fn finish(&self, result: Result<Vec<u8>>) {
        let done = self.lock().done.take();
        if let Some(done) = done {
            done(result);
        }
    }

    /// Whether the job may go out (it was not cancelled); `Some(id)` also
    /// records the request id it goes under, for a cancel that comes later.
    pub fn sending(&self, id: Option<u64>) -> bool {
        let mut state = self.lock();
        if state.done.is_none() {
            return false;
        }
        state.req_id = id;
        true
    }
}

#[derive(Default)]
struct Slot {
    result: Mutex<Option<Result<Vec<u8>>>>,
    ready: Condvar,
}

impl Slot {
    fn put(&self, result: Result<Vec<u8>>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.ready.notify_all();
    }
}

impl JobHandle {
    /// Waits for the job's result (never longer than its timeout, and the
    /// little it takes the client to see that it passed).
    pub fn wait(self) -> Result<Vec<u8>> {
        let mut result = self.slot.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = result.take() {
                return result;
            }
            result = self.slot.ready.wait(result).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits up to `wait` for the result; true once it is there (then
    /// [`JobHandle::wait`] returns at once). For a caller that must look at
    /// something else now and then, a signal say.
    pub fn wait_for(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let mut result = self.slot.result.lock().unwrap_or_else(|p| p.into_inner());
        while result.is_none() {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            result = self.slot.ready.wait_timeout(result, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// True once the result is there.
    pub fn is_ready(&self) -> bool {
        self.slot.result.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Cancels the job (see [`Cancel::cancel`]); [`JobHandle::wait`] then
    /// returns `Err(Error::Cancelled)` at once. False if the result came first.
    pub fn cancel(&self) -> bool {
        self.cancel.cancel()
    }

    /// What cancels the job, for another thread to keep.
    pub fn canceller(&self) -> Cancel {
        self.cancel.clone()
    }
}

impl Client {
    /// Sends a job and returns at once; its result (or typed error, as
    /// [`Client::execute`] gives) comes through the handle within `timeout`.
    pub fn submit(&self, job: impl Into<JobRequest>, timeout: Duration) -> JobHandle {
        let slot = Arc::new(Slot::default());
        let filled = Arc::clone(&slot);
        let cancel = self.submit_with(job, timeout, move |result| filled.put(result));
        JobHandle { slot, cancel }
    }

    /// Sends a job and returns at once; `done` is called once with its
    /// result within `timeout`, on the client's own thread: it must be
    /// quick (hand the result on, wake someone) and must not call the client.
    ///
    /// The jobs go out from one thread of the client's, started with the
    /// first one, over a connection of its own. Over `unix://` any number
    /// are in flight at once; over ZeroMQ (`ipc://`, `tcp://`) up to
    /// [`ZMQ_SUBMITTERS`](super::ZMQ_SUBMITTERS), the others wait their turn in the client, their
    /// timeouts running.
    pub fn submit_with(
        &self,
        job: impl Into<JobRequest>,
        timeout: Duration,
        done: impl FnOnce(Result<Vec<u8>>) + Send + 'static,
    ) -> Cancel {
        let token = Arc::new(Token::new(Box::new(done)));
        let submission =
            Submission { job: job.into(), timeout, deadline: Instant::now() + timeout, done: Arc::clone(&token) };
        let queue = match self.submitter.get_or_init(|| Submitter::start(self)) {
            Ok(submitter) => &submitter.queue,
            Err(e) => {
                submission.done.finish(Err(Error::BadFlag(format!("cannot submit: {e}"))));
                return Cancel { token, queue: None };
            }
        };
        queue.push(submission);
        Cancel { token, queue: Some(Arc::clone(queue)) }
    }
}

/// One submitted job.
pub(super) struct Submission {
    pub job: JobRequest,
    pub timeout: Duration,
    pub deadline: Instant,
    pub done: Arc<Token>,
}

/// Submitted jobs not yet taken by the client's thread.
#[derive(Default)]
pub(super) struct Queue {
    jobs: Mutex<(VecDeque<Submission>, bool)>,
    /// For the pool's threads.
    ready: Condvar,
    /// For the local driver, which waits on its connection too.
    pub wake: Option<Wakeup>,
    /// Request ids of sent jobs cancelled since the driver last looked.
    cancels: Mutex<Vec<u64>>,
    /// Over ZeroMQ, the client whose connection the jobs go out on: a
    /// cancel goes out on it too (the broker knows a request by its
    /// client's connection and id).
    pub zmq: std::sync::OnceLock<Arc<Client>>,
}

impl Queue {
    pub(super) fn push(&self, submission: Submission) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).0.push_back(submission);
        self.ready.notify_one();
        if let Some(wake) = &self.wake {
            wake.trigger();
        }
    }

    fn cancel_sent(&self, id: u64) {
        if let Some(Route::One(mux)) = self.zmq.get().map(|c| &c.route) {
            return mux.notify(vec![CommandFrame::new(Command::Cancel, id, 0, b"").encode().into()]);
        }
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).push(id);
        if let Some(wake) = &self.wake {
            wake.trigger();
        }
    }

    /// Request ids of sent jobs cancelled since the last call.
    pub fn take_cancels(&self) -> Vec<u64> {
        std::mem::take(&mut *self.cancels.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A queue for the local driver, which is woken through `wake`.
    pub fn waking(wake: Wakeup) -> Queue {
        Queue { wake: Some(wake), ..Queue::default() }
    }

    /// Everything queued, and whether the client is gone (nothing more comes).
    pub fn take_all(&self, into: &mut VecDeque<Submission>) -> bool {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        into.append(&mut jobs.0);
        jobs.1
    }

    /// The next job, waiting for one; `None` once the client is gone and
    /// none is left.
    pub(super) fn take_one(&self) -> Option<Submission> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = jobs.0.pop_front() {
                return Some(job);
            }
            if jobs.1 {
                return None;
            }
            jobs = self.ready.wait(jobs).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.ready.notify_all();
        if let Some(wake) = &self.wake {
            wake.trigger();
        }
    }
}
