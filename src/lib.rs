//! powerhose: a worker pool that turns CPU-bound work into I/O-bound work.
//!
//! An application hands a job to a [broker](broker) over ZeroMQ; the broker
//! routes it to an idle [worker] process, which runs it through a job-handler
//! [plugin] (a `cdylib` with a stable ABI) and sends the answer back to the
//! [client]. [`cluster`] runs a broker and its workers as one supervised unit.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod endpoint;
pub mod error;
pub mod ghosts;
pub mod health;
pub mod plugin;
pub mod protocol;
pub mod shutdown;
pub mod status;
pub mod worker;

pub use client::{Client, JobRequest, TimeoutPolicy};
pub use error::{Error, Result};

/// Exit status of a process whose plugin could not be found, loaded or initialised.
pub const EXIT_PLUGIN: i32 = 3;
