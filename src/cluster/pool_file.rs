//! The pool file of `powerhose --config FILE`: a `[pool.NAME]` table per
//! pool. Reading it checks everything that needs no process (syntax, field
//! names and types, numbers, a plugin per pool, one pool per service); a
//! refusal is one [`Error::PoolFile`] line naming the file, line and field.
//!
//! ```toml
//! [pool.hash]
//! plugin = "libcrypto_job.so"
//! workers = 4                       # default: --workers
//! params = { rounds = 3 }           # a table, or a string as --params takes it
//! max_age = 3600                    # seconds, 0: never [default: --max-age]
//! timeout = 30                      # seconds, 0: no limit [default: --timeout]
//! service = "hash"                  # default: the pool's name
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::plan::PoolSpec;
use crate::error::{Error, Result};

/// What a pool that leaves a field out gets: the command line's values.
#[derive(Clone, Debug)]
pub struct PoolDefaults {
    /// `--workers`.
    pub workers: usize,
    /// `--max-workers`: no pool may ask for more.
    pub max_workers: usize,
    /// `--max-age`.
    pub max_age: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    pool: BTreeMap<String, Spanned<RawPool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    plugin: Option<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    params: Option<Spanned<toml::Value>>,
    max_age: Option<Spanned<toml::Value>>,
    timeout: Option<Spanned<toml::Value>>,
    service: Option<Spanned<String>>,
}

/// A pool file read and checked: its pools, and where each pool's fields
/// are (to blame the right line when a plugin fails its check later).
#[derive(Clone, Debug)]
pub struct PoolFile {
    /// The file, as given.
    pub path: PathBuf,
    /// Its pools, by name.
    pub pools: Vec<PoolSpec>,
    /// (pool, field) → line, for the fields the file sets.
    lines: BTreeMap<(String, String), usize>,
}

impl PoolFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path, defaults: &PoolDefaults) -> Result<PoolFile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::PoolFile {
            path: path.to_path_buf(),
            line: 1,
            field: "file".into(),
            message: format!("cannot be read: {e}"),
        })?;
        PoolFile::parse(path, &text, defaults)
    }

    /// Checks `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str, defaults: &PoolDefaults) -> Result<PoolFile> {
        let refuse = |offset: usize, field: String, message: String| Error::PoolFile {
            path: path.to_path_buf(),
            line: line_of(text, offset),
            field,
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            refuse(offset, key_at(text, offset), e.message().trim().to_string())
        })?;
        if raw.pool.is_empty() {
            return Err(refuse(0, "pool".into(), "no pool: add a [pool.NAME] table with its plugin".into()));
        }
        let mut file = PoolFile { path: path.to_path_buf(), pools: Vec::new(), lines: BTreeMap::new() };
        for (name, pool) in &raw.pool {
            let at = pool.span().start;
            let pool = pool.get_ref();
            let field = |f: &str| format!("pool.{name}.{f}");
            let mut note = |f: &str, offset: usize| {
                file.lines.insert((name.clone(), f.to_string()), line_of(text, offset));
            };
            note("", at);
            let plugin = pool
                .plugin
                .as_ref()
                .ok_or_else(|| refuse(at, field("plugin"), "missing: every pool names its plugin".into()))?;
            note("plugin", plugin.span().start);
            let workers = match &pool.workers {
                None => defaults.workers,
                Some(n) if (1..=defaults.max_workers as i64).contains(n.get_ref()) => *n.get_ref() as usize,
                Some(n) => {
                    let message =
                        format!("{} is not between 1 and --max-workers {}", n.get_ref(), defaults.max_workers);
                    return Err(refuse(n.span().start, field("workers"), message));
                }
            };
            let params = match &pool.params {
                None => None,
                Some(p) => Some(params_json(p.get_ref()).map_err(|m| refuse(p.span().start, field("params"), m))?),
            };
            if let Some(p) = &pool.params {
                note("params", p.span().start);
            }
            let seconds = |value: &Option<Spanned<toml::Value>>, f: &str, default: Option<Duration>| match value {
                None => Ok(default),
                Some(v) => seconds(v.get_ref()).map_err(|m| refuse(v.span().start, field(f), m)),
            };
            let service = match &pool.service {
                Some(s) if s.get_ref().trim().is_empty() => {
                    return Err(refuse(s.span().start, field("service"), "is empty".into()));
                }
                Some(s) => s.get_ref().clone(),
                None => name.clone(),
            };
            let service_at = pool.service.as_ref().map_or(at, |s| s.span().start);
            if let Some(other) = file.pools.iter().find(|p| p.service == service) {
                let message = format!("service {service:?} is pool {:?}'s already", other.name);
                return Err(refuse(service_at, field("service"), message));
            }
            file.pools.push(PoolSpec {
                name: name.clone(),
                plugin: plugin.get_ref().clone(),
                params,
                workers,
                max_age: seconds(&pool.max_age, "max_age", defaults.max_age)?,
                timeout: seconds(&pool.timeout, "timeout", defaults.timeout)?,
                service,
            });
        }
        Ok(file)
    }

    /// The refusal for `field` of pool `pool` (its line, else the pool's):
    /// for what only starting it finds out, such as a plugin failing its check.
    pub fn refuse(&self, pool: &str, field: &str, message: impl Into<String>) -> Error {
        let line = |f: &str| self.lines.get(&(pool.to_string(), f.to_string())).copied();
        Error::PoolFile {
            path: self.path.clone(),
            line: line(field).or_else(|| line("")).unwrap_or(1),
            field: format!("pool.{pool}.{field}"),
            message: message.into(),
        }
    }
}

/// A table as JSON, or a string as `--params` takes it.
fn params_json(value: &toml::Value) -> std::result::Result<String, String> {
    match value {
        toml::Value::String(s) => crate::cli::parse_params(s).map_err(|e| e.to_string().replace("--params", "params")),
        toml::Value::Table(t) => serde_json::to_string(t).map_err(|e| e.to_string()),
        other => Err(format!("must be a table or a string, not {}", other.type_str())),
    }
}

/// Seconds as a number (0: off); negative ones are refused.
fn seconds(value: &toml::Value) -> std::result::Result<Option<Duration>, String> {
    let secs = match value {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => return Err(format!("must be a number of seconds, not {}", other.type_str())),
    };
    let d = Duration::try_from_secs_f64(secs).map_err(|_| format!("{secs} is not a non-negative number of seconds"))?;
    Ok((!d.is_zero()).then_some(d))
}

/// The line (from 1) of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The dotted name of the key at `offset` (the table header above it, then
/// the key on its line): toml's own messages name the field only for some
/// errors (unknown or missing ones), not for a value of the wrong type.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    if line.trim_start().starts_with('[') {
        return line.trim().trim_matches(|c| c == '[' || c == ']').trim().to_string();
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line.split_once('=').map(|(k, _)| k.trim().to_string()).filter(|k| !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => "file".into(),
    }
}
