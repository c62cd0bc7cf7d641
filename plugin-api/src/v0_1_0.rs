//! The root module and handler as plugin-api 0.1.0 laid them out, frozen:
//! what a host loads a 0.1.0 plugin as.
//!
//! abi_stable refuses a library whose prefix type has fewer fields than the
//! host's (it lets a newer library serve an older host, not the reverse),
//! so a host that grew [`crate::PluginMod`] keeps each older layout it still
//! serves and loads a plugin with the newest one that fits. Never edit these
//! types: their names and fields must stay exactly 0.1.0's.

// `#[sabi_trait]` expands to impls inside a const block; the lint is about that generated code.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::abi::RHeader;

/// 0.1.0's handler object.
#[sabi_trait]
pub trait RawHandler: Send + Sync {
    /// Runs one job: headers and data in, result bytes or an error message out.
    #[sabi(last_prefix_field)]
    fn handle(&self, headers: RSlice<'_, RHeader<'_>>, data: RSlice<'_, u8>) -> RResult<RVec<u8>, RString>;
}

/// 0.1.0's owned handler.
pub type HandlerBox = RawHandler_TO<'static, RBox<()>>;

/// 0.1.0's root module.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// The plugin's name.
    pub name: RStr<'static>,
    /// The plugin's version.
    pub version: RStr<'static>,
    /// Builds the handler from the JSON parameters.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(params_json: RStr<'_>) -> RResult<HandlerBox, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "powerhose_plugin";
    const NAME: &'static str = "powerhose_plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.1.0");
}
