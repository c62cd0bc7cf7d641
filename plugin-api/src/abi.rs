//! The types that cross the library boundary: the root module and the handler object.

// `#[sabi_trait]` expands to impls inside a const block; the lint is about that generated code.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use std::sync::atomic::AtomicBool;

/// One job header, borrowed for the duration of a call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct RHeader<'a> {
    /// The header's name as the client sent it (free-form; names may repeat).
    pub name: RStr<'a>,
    /// The header's value, UTF-8 text.
    pub value: RStr<'a>,
}

/// The handler object a plugin's `init` returns.
///
/// Implementations must not let a panic escape `handle`: the generated adapter
/// in [`crate::export_plugin!`] catches it and returns it as an error.
#[sabi_trait]
pub trait RawHandler: Send + Sync {
    /// Runs one job: headers and data in, result bytes or an error message out.
    #[sabi(last_prefix_field)]
    fn handle(&self, headers: RSlice<'_, RHeader<'_>>, data: RSlice<'_, u8>) -> RResult<RVec<u8>, RString>;

    /// Since 0.1.1: runs one job with its context (its id, and the flag the
    /// worker sets when the job is cancelled). A plugin built against 0.1.0
    /// lacks it; the host then gets this default, which calls `handle`.
    fn handle_job(
        &self,
        headers: RSlice<'_, RHeader<'_>>,
        data: RSlice<'_, u8>,
        context: JobContext<'_>,
    ) -> RResult<RVec<u8>, RString> {
        let _ = context;
        self.handle(headers, data)
    }
}

/// What the worker tells a handler about the job it runs (since 0.1.1).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct JobContext<'a> {
    /// The broker's id of the job (unique per broker run).
    pub id: u64,
    /// Set (never cleared) when the client cancels the job while it runs.
    pub cancelled: &'a AtomicBool,
}

/// Where a plugin's log records go: the worker's subscriber (since 0.1.1).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct LogSink {
    /// The most verbose level the worker records: 0 none, 1 error, 2 warn,
    /// 3 info, 4 debug, 5 trace.
    pub max_level: u8,
    /// Records one event at `level` (1 error to 5 trace) from `target` (a
    /// module path in the plugin), `message` with its fields rendered.
    pub emit: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
}

/// An owned, type-erased handler as it travels across the boundary.
pub type HandlerBox = RawHandler_TO<'static, RBox<()>>;

/// The root module every powerhose plugin exports.
///
/// This is a prefix type: fields may only ever be appended (see the crate docs).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's name; workers register it as their service name.
    pub name: RStr<'static>,
    /// The plugin's version (its crate version by default).
    pub version: RStr<'static>,
    /// Builds the handler from the JSON parameters given to the worker.
    /// A panic inside is caught by the plugin and returned as an error.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(params_json: RStr<'_>) -> RResult<HandlerBox, RString>,
    /// Since 0.1.1: the version of powerhose-plugin-api the plugin was built
    /// against (a 0.1.0 plugin lacks the field: its accessor gives `None`).
    pub api_version: RStr<'static>,
    /// Since 0.1.1: gives the plugin the worker's log sink, before `init`.
    pub set_log_sink: extern "C" fn(sink: LogSink),
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "powerhose_plugin";
    const NAME: &'static str = "powerhose_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
