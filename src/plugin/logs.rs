//! The worker's side of plugin logging: the sink given to a plugin (built
//! against plugin-api 0.1.1 or later), which turns each of its records into
//! an event of the worker's own subscriber, with the plugin's name, the
//! worker's pid and the job it was running.

use std::cell::Cell;
use std::sync::OnceLock;

use abi_stable::std_types::RStr;
use powerhose_plugin_api::{LogSink, PluginModRef};
use tracing::level_filters::LevelFilter;

/// The name of the plugin whose records this process relays.
static PLUGIN: OnceLock<String> = OnceLock::new();

thread_local! {
    /// The job this thread runs (0: none), for its records.
    static JOB: Cell<u64> = const { Cell::new(0) };
}

/// The job a thread runs while the value lives.
pub(super) struct JobScope(u64);

impl JobScope {
    pub(super) fn enter(id: u64) -> JobScope {
        JobScope(JOB.with(|job| job.replace(id)))
    }
}

impl Drop for JobScope {
    fn drop(&mut self) {
        JOB.with(|job| job.set(self.0));
    }
}

/// Gives the plugin the sink, at the level the worker records.
pub(super) fn give_sink(module: PluginModRef, name: &str) {
    let _ = PLUGIN.set(name.to_string());
    let max_level = match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    };
    (module.set_log_sink())(LogSink { max_level, emit });
}

/// One record from the plugin. Called across the ABI: nothing in it panics.
extern "C" fn emit(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let plugin = PLUGIN.get().map_or("?", String::as_str);
    let (target, message) = (target.as_str(), message.as_str());
    let job = JOB.with(Cell::get);
    let pid = std::process::id();
    macro_rules! relay {
        ($level:expr) => {
            tracing::event!(target: "plugin", $level, plugin = %plugin, pid, job, target = %target, "{message}")
        };
    }
    match level {
        0 | 1 => relay!(tracing::Level::ERROR),
        2 => relay!(tracing::Level::WARN),
        3 => relay!(tracing::Level::INFO),
        4 => relay!(tracing::Level::DEBUG),
        _ => relay!(tracing::Level::TRACE),
    }
}
