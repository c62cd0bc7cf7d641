//! Host side of plugins: finding a plugin file, loading it with abi_stable's
//! checked loading, and turning each way that can fail into one readable line.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use abi_stable::library::LibraryError;

use crate::error::{Error, Result};

mod loaded;
mod logs;

pub use loaded::{parse_version, LoadedPlugin, HOST_API};

/// Environment variable naming a directory searched for bare plugin names.
pub const PLUGIN_DIR_ENV: &str = "POWERHOSE_PLUGIN_DIR";

/// Ends a load error whose details only `--debug` shows (which drops it).
pub const DEBUG_HINT: &str = " (details with --debug)";

/// The worker flag that loads and initialises the plugin, then exits.
pub const CHECK_FLAG: &str = "--check-plugin";

/// Resolves `--plugin`: a path (anything with a `/`) is taken as is; a bare
/// file name is looked up in the current directory, then in `plugin_dir`
/// (flag, else `$POWERHOSE_PLUGIN_DIR`), then next to the running executable.
/// A bare name without `.so` (`crypto_job`) also matches `libcrypto_job.so`.
pub fn locate(spec: &str, plugin_dir: Option<&Path>) -> Result<PathBuf> {
    if spec.contains('/') {
        let path = PathBuf::from(spec);
        return if path.exists() {
            Ok(path)
        } else {
            Err(Error::PluginNotFound { name: spec.to_string(), searched: vec![path], advice: String::new() })
        };
    }
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from(".")];
    if let Some(dir) = plugin_dir.map(Path::to_path_buf).or_else(|| std::env::var_os(PLUGIN_DIR_ENV).map(PathBuf::from))
    {
        dirs.push(dir);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        dirs.push(dir);
    }
    let mut names = vec![spec.to_string()];
    if !spec.ends_with(".so") {
        names.push(format!("lib{spec}.so"));
    }
    let mut searched = Vec::new();
    for dir in &dirs {
        for name in &names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate);
        }
    }
    let near = near_name(spec, &dirs).map(|n| format!("; did you mean {n}?")).unwrap_or_default();
    let advice = format!("{near} (other directories: --plugin-dir or ${PLUGIN_DIR_ENV})");
    Err(Error::PluginNotFound { name: spec.to_string(), searched, advice })
}

/// A plugin in `dirs` whose name is a typo away from `spec` (edit distance
/// at most 2, `lib` and `.so` aside), written the way `spec` was.
fn near_name(spec: &str, dirs: &[PathBuf]) -> Option<String> {
    let stem = |name: &str| -> String {
        let name = name.strip_suffix(".so").unwrap_or(name);
        name.strip_prefix("lib").unwrap_or(name).to_string()
    };
    let wanted = stem(spec);
    let mut best: Option<(usize, String)> = None;
    for entry in dirs.iter().filter_map(|d| std::fs::read_dir(d).ok()).flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".so") {
            continue;
        }
        let distance = edit_distance(&wanted, &stem(&file));
        if distance <= 2 && best.as_ref().is_none_or(|(d, _)| *d > distance) {
            let shown = if spec.ends_with(".so") { file } else { stem(&file) };
            best = Some((distance, shown));
        }
    }
    best.map(|(_, name)| name)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Runs `exe args --check-plugin` (a worker that stops once its plugin is
/// loaded and initialised) and turns a failure into its one line. In a child
/// process, so that a plugin that crashes in init cannot take this process
/// (a supervisor, or an application embedding a cluster) down with it.
pub fn check_in_child(exe: &Path, args: &[OsString], timeout: Duration) -> Result<()> {
    let mut child = Command::new(exe)
        .args(args)
        .arg(CHECK_FLAG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(format!("starting {}", exe.display())))?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // The pipe closes when the checker exits: no polling for its status.
    let text = match rx.recv_timeout(timeout) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let message = format!("plugin check: the plugin's init did not finish within {timeout:?}");
            return Err(Error::PluginCheck { message, details: String::new() });
        }
    };
    let status = child.wait().map_err(Error::io("waiting for the plugin check"))?;
    if status.success() {
        return Ok(());
    }
    // The checker's own report is `PROGRAM: error: MESSAGE`; ours adds our name.
    let (message, details) = match text.lines().position(|l| l.contains(": error: ")) {
        Some(i) => {
            let line = text.lines().nth(i).unwrap_or_default();
            let message = line.split_once(": error: ").map_or(line, |(_, m)| m).to_string();
            let details: Vec<&str> = text.lines().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| l).collect();
            (message, details.join("\n"))
        }
        None => {
            let how = status.signal().map_or(format!("exit code {:?}", status.code()), |s| format!("signal {s}"));
            (format!("plugin check: the plugin's init crashed the checker ({how})"), text)
        }
    };
    Err(match status.code() {
        Some(crate::EXIT_BAD_FLAG) => Error::BadFlag(message),
        _ => Error::PluginCheck { message, details },
    })
}

/// One line for a user; abi_stable's own text can be tens of kilobytes.
fn condense(e: &LibraryError, full: &str) -> String {
    match e {
        LibraryError::OpenError { err, .. } => {
            let text = err.to_string();
            // dlerror's text is "PATH: reason"; the path is already in our message.
            let reason = text.rsplit(": ").next().unwrap_or(&text).trim_end_matches(['"', '}', ' ']);
            format!("cannot be loaded as a shared library ({reason})")
        }
        LibraryError::GetSymbolError { .. } => {
            "is not a powerhose plugin: it exports no abi_stable root module (build it with export_plugin!)".into()
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            "was built with an incompatible abi_stable version or compiler ABI; rebuild it".into()
        }
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "was built against powerhose-plugin-api {actual_version}, which is incompatible with this host's \
             {expected_version}; rebuild the plugin"
        ),
        LibraryError::AbiInstability(_) => format!(
            "was built against an incompatible powerhose-plugin-api ({}); rebuild the plugin against plugin-api {} \
             {DEBUG_HINT}",
            first_mismatch(full),
            HOST_API
        ),
        LibraryError::RootModule { err, .. } => {
            format!("its root module failed to load: {}", one_line(&err.to_string()))
        }
        LibraryError::ParseVersionError(v) => format!("has an unreadable version string: {}", one_line(&v.to_string())),
        LibraryError::Many(errors) => match errors.first() {
            Some(first) => condense(first, &first.to_string()),
            None => "failed to load".into(),
        },
    }
}

/// The first error of an abi_stable layout report, with the type it is about
/// ("incompatible type size in RHeader<'a>").
fn first_mismatch(full: &str) -> String {
    let mut in_layout_header = false;
    let mut current_type: Option<&str> = None;
    for line in full.lines().map(str::trim) {
        if line.starts_with("Layout of expected type") || line.starts_with("Layout of found type") {
            in_layout_header = true;
        } else if in_layout_header && line.starts_with("type:") {
            current_type = Some(line.trim_start_matches("type:"));
            in_layout_header = false;
        } else if let Some(error) = line.strip_prefix("Error:") {
            let error = truncate(error.trim(), 100);
            return match current_type {
                Some(ty) => format!("{error} in {}", truncate(ty, 60)),
                None => error,
            };
        }
    }
    "layout mismatch".into()
}

fn one_line(s: &str) -> String {
    truncate(&s.split_whitespace().collect::<Vec<_>>().join(" "), 200)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_bare_names_and_lib_prefix_in_plugin_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libfoo.so"), b"").unwrap();
        assert_eq!(locate("libfoo.so", Some(dir.path())).unwrap(), dir.path().join("libfoo.so"));
        assert_eq!(locate("foo", Some(dir.path())).unwrap(), dir.path().join("libfoo.so"));
        let err = locate("nothere.so", Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("not found") && err.contains("nothere.so"), "{err}");
        assert!(locate("/no/such/dir/libx.so", None).is_err());
    }

    #[test]
    fn a_typo_gets_a_near_name_and_where_else_to_look() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libcrypto_job.so"), b"").unwrap();
        std::fs::write(dir.path().join("libecho.so"), b"").unwrap();
        let err = locate("crypto_jb", Some(dir.path())).unwrap_err().to_string();
        assert!(err.starts_with("plugin crypto_jb: not found (looked in "), "{err}");
        assert!(
            err.ends_with("; did you mean crypto_job? (other directories: --plugin-dir or $POWERHOSE_PLUGIN_DIR)"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = locate("libcrypt_jobs.so", Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("did you mean libcrypto_job.so?"), "{err}");
        // Nothing near: only where else to look.
        let err = locate("imaging", Some(dir.path())).unwrap_err().to_string();
        assert!(!err.contains("did you mean") && err.contains("--plugin-dir"), "{err}");
        assert_eq!(edit_distance("crypto_jb", "crypto_job"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn layout_reports_condense_to_the_first_error_and_its_type() {
        let report = "Compared <this>:\n  type:PrefixRef<'a, PluginMod>\nLayout of expected type:\n    type:RHeader<'a>\n    size:32\n\nError:incompatible type size\nExpected:\n    32\nError:too many fields\n";
        assert_eq!(first_mismatch(report), "incompatible type size in RHeader<'a>");
        assert_eq!(first_mismatch("nothing useful"), "layout mismatch");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
