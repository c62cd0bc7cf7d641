//! A plugin's side of logging (since 0.1.1): once the worker gives its sink,
//! the plugin's `tracing` events and `log` records go to it, rendered to one
//! line each, at the worker's level.
//!
//! The plugin is a cdylib with its own static copies of `tracing` and `log`
//! (the worker's are out of its reach): a subscriber and a logger installed
//! here, as those copies' globals, are what the author's macros hit, since
//! Cargo builds one `tracing` and one `log` for the whole plugin.

use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use abi_stable::std_types::RStr;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::abi::LogSink;

/// The sink the worker gave, if it gave one (a 0.1.0 host never does).
static SINK: OnceLock<LogSink> = OnceLock::new();

/// Keeps the worker's sink and routes `tracing` and `log` to it; called by
/// the worker once, before `init` (a second call changes nothing). Called
/// across the ABI: nothing here panics.
pub(crate) extern "C" fn set_sink(sink: LogSink) {
    if SINK.set(sink).is_err() {
        return;
    }
    let max = sink.max_level.min(5);
    // Either may be taken already (the author installed their own): theirs stays.
    let _ = tracing::subscriber::set_global_default(Relay { max, next_span: AtomicU64::new(1) });
    if log::set_logger(&LogRelay).is_ok() {
        log::set_max_level(log_filter(max));
    }
}

/// The worker's sink, once it was given.
pub(crate) fn sink() -> Option<&'static LogSink> {
    SINK.get()
}

/// Hands one rendered record to the worker.
fn emit(level: u8, target: &str, message: &str) {
    if let Some(sink) = sink() {
        (sink.emit)(level, RStr::from_str(target), RStr::from_str(message));
    }
}

/// The ABI's number of a `tracing` level: 1 error .. 5 trace.
fn level_number(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn log_filter(max: u8) -> log::LevelFilter {
    match max {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Runs `render` (user code: fields' `Display` and `Debug`), turning a
/// panic into a note in the record rather than an unwind across the ABI.
fn guarded(render: impl FnOnce(&mut String)) -> String {
    let mut text = String::new();
    if catch_unwind(AssertUnwindSafe(|| render(&mut text))).is_err() {
        text = "(this record's fields panicked while rendering)".into();
    }
    text
}

/// The plugin's `tracing` subscriber: events at or below the worker's level
/// go to the sink; spans get ids and are otherwise ignored.
struct Relay {
    max: u8,
    next_span: AtomicU64,
}

impl Subscriber for Relay {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // The level never changes: each callsite is decided once, for good.
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && level_number(metadata.level()) <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.max {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // Never 0 (`Id::from_u64` refuses it), even after wrapping.
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let message = guarded(|text| {
            let mut fields = Fields { message: text, rest: String::new() };
            event.record(&mut fields);
            let rest = std::mem::take(&mut fields.rest);
            text.push_str(&rest);
        });
        emit(level_number(metadata.level()), metadata.target(), message.trim_start());
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// An event's fields as one line: the message, then ` key=value` for each
/// other field in the order given.
struct Fields<'a> {
    message: &'a mut String,
    rest: String,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // A message is `format_args!`, whose Debug is its text.
        let _ = match field.name() {
            "message" => write!(self.message, "{value:?}"),
            name => write!(self.rest, " {name}={value:?}"),
        };
    }
}

/// The plugin's `log` logger: records at or below the worker's level go to the sink.
struct LogRelay;

impl log::Log for LogRelay {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = guarded(|text| {
            let _ = write!(text, "{}", record.args());
        });
        // log's levels are numbered as the ABI's: Error = 1 .. Trace = 5.
        emit(record.level() as u8, record.target(), &message);
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_the_abi_numbers() {
        assert_eq!([Level::ERROR, Level::TRACE].map(|l| level_number(&l)), [1, 5]);
        assert_eq!([log::Level::Error as u8, log::Level::Info as u8, log::Level::Trace as u8], [1, 3, 5]);
        assert_eq!(
            [log_filter(0), log_filter(3), log_filter(9)],
            [log::LevelFilter::Off, log::LevelFilter::Info, log::LevelFilter::Trace]
        );
    }

    static SEEN: std::sync::Mutex<Vec<(u8, String, String)>> = std::sync::Mutex::new(Vec::new());

    extern "C" fn keep(level: u8, target: RStr<'_>, message: RStr<'_>) {
        SEEN.lock().unwrap().push((level, target.to_string(), message.to_string()));
    }

    // The only test that installs the sink: it is the process's, for good.
    #[test]
    fn tracing_events_and_log_records_reach_the_sink_at_its_level() {
        set_sink(LogSink { max_level: 3, emit: keep });
        set_sink(LogSink { max_level: 5, emit: keep }); // a second sink changes nothing
        let span = tracing::info_span!("job", id = 7).entered();
        tracing::info!(rows = 3, name = "x y", "read {} rows", 3);
        tracing::debug!("too verbose");
        drop(span);
        tracing::warn!(ok = true);
        log::info!("from log {}", 1);
        log::debug!("too verbose too");
        let seen = std::mem::take(&mut *SEEN.lock().unwrap());
        let module = module_path!().to_string();
        assert_eq!(
            seen,
            [
                (3, module.clone(), r#"read 3 rows rows=3 name="x y""#.to_string()),
                (2, module.clone(), "ok=true".to_string()),
                (3, module, "from log 1".to_string()),
            ]
        );
    }

    #[test]
    fn a_panicking_field_is_a_note_not_an_unwind() {
        struct Bad;
        impl std::fmt::Display for Bad {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("bad Display")
            }
        }
        let text = guarded(|text| {
            let _ = write!(text, "{}", Bad);
        });
        assert_eq!(text, "(this record's fields panicked while rendering)");
    }
}
