//! The binaries' logs: human-readable lines on stderr by default, or with
//! `--log-format json` one JSON object a line (tracing-subscriber's JSON
//! layer) for log collectors. What a binary writes on stderr outside its
//! logs (its fatal error, progress notes) follows the same format, so a
//! collector reading stderr in json mode gets JSON only.

use std::sync::OnceLock;

use crate::error::Error;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: `2024-05-01T10:00:00Z  INFO message`, coloured on a terminal.
    #[default]
    Text,
    /// For collectors: `{"timestamp":…,"level":"INFO","fields":{"message":…},"target":…}`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(Error::BadFlag(format!("--log-format must be text or json, not {other:?}"))),
        }
    }
}

/// `--log-format`, shared by every binary.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Logs on stderr as `text`, for people, or `json`: one object a line
    /// (timestamp, level, fields.message, target), for log collectors.
    // A string checked by `init`, not a clap value enum: a bad value is then
    // the one-line error (exit 2) that every other bad flag value gets.
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,
}

impl LogArgs {
    /// Installs the logger in this format; a bad `--log-format` is an
    /// [`Error::BadFlag`] (reported in text, since no format holds yet).
    pub fn init(&self, debug: bool) -> Result<LogFormat, Error> {
        let format = self.log_format.parse()?;
        init_tracing(debug, format);
        Ok(format)
    }
}

/// The format the logger was installed with, for the lines written beside it.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format of this process's logs ([`LogFormat::Text`] until [`init_tracing`]).
pub fn log_format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Logs to stderr; `RUST_LOG` overrides the level (`info`, `debug` with `--debug`).
pub fn init_tracing(debug: bool, format: LogFormat) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_target(false).try_init()
        }
        // The target stays: it tells a plugin's records ("plugin") from ours.
        LogFormat::Json => builder.with_ansi(false).json().try_init(),
    };
    // A logger installed before (an embedding application's) keeps its own format.
    if installed.is_ok() {
        let _ = FORMAT.set(format);
    }
}

/// A line for the user on stderr that is not a log record (`PROGRAM: TEXT`):
/// as is in text mode, an info record in json mode.
pub fn note(program: &str, text: &str) {
    match log_format() {
        LogFormat::Text => eprintln!("{program}: {text}"),
        LogFormat::Json => tracing::info!("{program}: {text}"),
    }
}

/// [`note`] for a warning.
pub fn warn(program: &str, text: &str) {
    match log_format() {
        LogFormat::Text => eprintln!("{program}: {text}"),
        LogFormat::Json => tracing::warn!("{program}: {text}"),
    }
}

/// Writes a fatal error's line (`PROGRAM: error: LINE`) and its details.
pub(super) fn error_line(program: &str, line: &str, details: Option<&str>) {
    match (log_format(), details) {
        (LogFormat::Text, details) => {
            eprintln!("{program}: error: {line}");
            if let Some(details) = details {
                eprintln!("{details}");
            }
        }
        (LogFormat::Json, None) => tracing::error!("{program}: error: {line}"),
        (LogFormat::Json, Some(details)) => tracing::error!(details, "{program}: error: {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_a_bad_one_is_a_bad_flag() {
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let err = "xml".parse::<LogFormat>().unwrap_err();
        assert!(matches!(err, Error::BadFlag(_)), "{err:?}");
        assert_eq!(err.to_string(), "--log-format must be text or json, not \"xml\"");
    }
}
