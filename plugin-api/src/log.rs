//! A plugin's side of logging: the worker's sink, kept for the plugin's
//! records (since 0.1.1).

use std::sync::OnceLock;

use crate::abi::LogSink;

/// The sink the worker gave, if it gave one (a 0.1.0 host never does).
static SINK: OnceLock<LogSink> = OnceLock::new();

/// Keeps the worker's sink; called by the worker once, before `init`.
pub(crate) extern "C" fn set_sink(sink: LogSink) {
    let _ = SINK.set(sink);
}

/// The worker's sink, once it was given.
#[allow(dead_code)]
pub(crate) fn sink() -> Option<&'static LogSink> {
    SINK.get()
}
