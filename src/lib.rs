//! powerhose: a worker pool that turns CPU-bound work into I/O-bound work.
//!
//! An application hands a job to a [broker] over ZeroMQ; the broker
//! routes it to an idle [worker] process, which runs it through a job-handler
//! [plugin] (a `cdylib` with a stable ABI) and sends the answer back to the
//! [client]. [`cluster`] runs a broker and its workers as one supervised unit.

#![deny(missing_docs)]

pub mod affinity;
pub mod auth;
#[cfg(feature = "tools")]
pub mod bench;
pub mod broker;
#[cfg(feature = "tools")]
pub mod cli;
pub mod client;
pub mod cluster;
pub mod endpoint;
pub mod error;
#[cfg(feature = "tools")]
pub mod ghosts;
#[cfg(feature = "tools")]
pub mod health;
pub mod keys;
pub mod local;
#[cfg(feature = "tools")]
pub mod metrics;
pub mod plugin;
pub mod protocol;
mod redial;
pub mod status;
pub mod sys;
pub mod wakeup;
#[cfg(feature = "tools")]
pub mod watch;
pub mod worker;

pub use client::{Client, JobRequest, TimeoutPolicy};
pub use error::{Error, Result};

/// Exit status of a process whose plugin could not be found, loaded or initialised.
pub const EXIT_PLUGIN: i32 = 3;

/// Exit status of a program given an unusable flag value (as clap's own errors).
pub const EXIT_BAD_FLAG: i32 = 2;

/// Counts this thread's heap allocations, for tests that prove a path
/// allocates nothing.
#[cfg(test)]
pub(crate) mod test_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: defers to the system allocator; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            COUNT.with(|c| c.set(c.get() + 1));
            // SAFETY: our caller's contract for `layout` is System's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from System.alloc with `layout` (alloc defers to it).
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            COUNT.with(|c| c.set(c.get() + 1));
            // SAFETY: as for dealloc; `new_size` is our caller's, valid for System.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Allocations made so far by the calling thread.
    pub fn allocations() -> u64 {
        COUNT.with(Cell::get)
    }

    #[test]
    fn the_counter_counts() {
        let before = allocations();
        let boxed = std::hint::black_box(Box::new([0u8; 64]));
        assert_eq!(allocations() - before, 1);
        drop(boxed);
    }
}
