//! A loaded plugin: loaded with the newest root-module layout it fits (a
//! plugin built against an older plugin-api with that version's frozen
//! layout), initialised, and called once per job.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use abi_stable::library::{lib_header_from_path, LibraryError};
use abi_stable::std_types::{RResult, RSlice, RStr, RVec};
use powerhose_plugin_api::{v0_1_0, HandlerBox, JobContext, PluginModRef, RHeader};

use super::{condense, logs};
use crate::error::{Error, Result};

/// The plugin-api version of plugins that predate the `api_version` field.
const OLDEST_API: &str = "0.1.0";

/// The plugin-api version this host is built with: the newest it knows.
pub const HOST_API: &str = powerhose_plugin_api::API_VERSION;

/// The handler, as the plugin's plugin-api version shaped it.
enum Handler {
    /// 0.1.1 and later: jobs come with their context (id, cancel flag).
    Current(HandlerBox),
    /// 0.1.0: headers and data only; never told of a cancel.
    V0_1_0(v0_1_0::HandlerBox),
}

/// A loaded, initialised plugin. The library stays mapped for the life of the
/// process: abi_stable never unloads, so a new plugin version needs a new worker.
pub struct LoadedPlugin {
    /// The library file it was loaded from.
    pub path: PathBuf,
    /// The name it exports (the default service name).
    pub name: String,
    /// The version it exports.
    pub version: String,
    /// The powerhose-plugin-api version it was built against.
    pub api_version: String,
    handler: Handler,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedPlugin({} {} from {})", self.name, self.version, self.path.display())
    }
}

/// `major.minor.patch` as numbers (`None` if it is not that).
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().splitn(3, '.').map(|p| p.parse::<u64>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

impl LoadedPlugin {
    /// Loads the plugin at `path` and calls its init with `params_json`.
    pub fn load(path: &Path, params_json: &str) -> Result<LoadedPlugin> {
        LoadedPlugin::load_requiring(path, params_json, None)
    }

    /// [`LoadedPlugin::load`], refusing a plugin built against a
    /// plugin-api older than `required` (say `0.1.1`, for cancellation and
    /// logging) before its init runs.
    pub fn load_requiring(path: &Path, params_json: &str, required: Option<&str>) -> Result<LoadedPlugin> {
        let fail = |e: LibraryError| {
            let details = e.to_string();
            Error::PluginLoad { path: path.to_path_buf(), reason: condense(&e, &details), details }
        };
        if !path.exists() {
            return Err(Error::PluginNotFound {
                name: path.display().to_string(),
                searched: vec![path.to_path_buf()],
                advice: String::new(),
            });
        }
        // Not `PluginModRef::load_from_file`: it caches the first module per type
        // for the whole process, so a second plugin would come back as the first.
        let header = lib_header_from_path(path).map_err(fail)?;
        let (name, version, api_version, init) = match header.init_root_module::<PluginModRef>() {
            Ok(module) => {
                let name = module.name().to_string();
                logs::give_sink(module, &name);
                let api = module.api_version().to_string();
                (name, module.version().to_string(), api, Init::Current(module))
            }
            // Fewer fields than this host's module: an older plugin-api's
            // layout may fit; if none does, the newest one's report stands.
            Err(newest @ LibraryError::AbiInstability(_)) => match header.init_root_module::<v0_1_0::PluginModRef>() {
                Ok(old) => {
                    (old.name().to_string(), old.version().to_string(), OLDEST_API.to_string(), Init::V0_1_0(old))
                }
                Err(_) => return Err(fail(newest)),
            },
            Err(e) => return Err(fail(e)),
        };
        if let Some(required) = required {
            if parse_version(&api_version) < parse_version(required) {
                let reason = format!(
                    "was built against powerhose-plugin-api {api_version}, older than the {required} this worker \
                     requires (--require-plugin-api); rebuild it against plugin-api {HOST_API}"
                );
                return Err(Error::PluginLoad { path: path.to_path_buf(), reason, details: String::new() });
            }
        }
        let params = RStr::from_str(params_json);
        let init_failed = |message: String| Error::PluginInit {
            path: path.to_path_buf(),
            name: name.clone(),
            version: version.clone(),
            message,
        };
        let handler = match init {
            Init::Current(module) => match (module.init())(params) {
                RResult::ROk(h) => Handler::Current(h),
                RResult::RErr(message) => return Err(init_failed(message.into())),
            },
            Init::V0_1_0(module) => match (module.init())(params) {
                RResult::ROk(h) => Handler::V0_1_0(h),
                RResult::RErr(message) => return Err(init_failed(message.into())),
            },
        };
        Ok(LoadedPlugin { path: path.to_path_buf(), name, version, api_version, handler })
    }

    /// Whether the plugin is told when a job it runs is cancelled (built
    /// against plugin-api 0.1.1 or later).
    pub fn sees_cancels(&self) -> bool {
        matches!(self.handler, Handler::Current(_))
    }

    /// Runs one job; `Err` carries the handler's message (panics included).
    pub fn handle<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        data: &[u8],
    ) -> Result<Vec<u8>, String> {
        static NEVER: AtomicBool = AtomicBool::new(false);
        self.handle_job(headers, data, 0, &NEVER).map(|out| out.to_vec())
    }

    /// Runs job `id`, which `cancelled` marks as cancelled, without
    /// converting the result: the bytes stay in the plugin's buffer (a
    /// worker copies them once, into its reply).
    pub fn handle_job<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        data: &[u8],
        id: u64,
        cancelled: &AtomicBool,
    ) -> Result<RVec<u8>, String> {
        let headers: Vec<RHeader<'a>> =
            headers.into_iter().map(|(n, v)| RHeader { name: RStr::from_str(n), value: RStr::from_str(v) }).collect();
        let (headers, data) = (RSlice::from_slice(&headers), RSlice::from_slice(data));
        let _job = logs::JobScope::enter(id);
        let result = match &self.handler {
            Handler::Current(h) => h.handle_job(headers, data, JobContext { id, cancelled }),
            Handler::V0_1_0(h) => h.handle(headers, data),
        };
        match result {
            RResult::ROk(out) => Ok(out),
            RResult::RErr(msg) => Err(msg.into()),
        }
    }
}

/// A root module, checked, whose init has not run yet.
enum Init {
    Current(PluginModRef),
    V0_1_0(v0_1_0::PluginModRef),
}
