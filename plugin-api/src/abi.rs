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
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "powerhose_plugin";
    const NAME: &'static str = "powerhose_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
