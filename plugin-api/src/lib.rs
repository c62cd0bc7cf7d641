//! The stable ABI between powerhose workers and job-handler plugins.
//!
//! A plugin is a `cdylib` that implements [`Plugin`] in ordinary safe Rust and
//! calls [`export_plugin!`] once. The worker loads it with abi_stable's checked
//! loading, so a plugin built against an incompatible version of this crate is
//! refused at load time with an error instead of being called into.
//!
//! ```no_run
//! use powerhose_plugin_api::{export_plugin, Job, Params, Plugin};
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     fn init(_params: &Params) -> Result<Self, String> { Ok(Echo) }
//!     fn handle(&self, job: &Job<'_>) -> Result<Vec<u8>, String> { Ok(job.data().to_vec()) }
//! }
//! export_plugin!(Echo);
//! ```
//!
//! # Rules for evolving the interface
//!
//! The root module [`PluginMod`] is an abi_stable *prefix type*:
//! - never change, reorder or remove an existing field, and never change the
//!   signature of [`RawHandler`]'s existing methods or of [`RHeader`];
//! - new capabilities are added as fields **appended at the end** of
//!   [`PluginMod`] (after the field marked `last_prefix_field`) or as methods
//!   appended to [`RawHandler`]; a host reading a new field from an older
//!   plugin must use the optional accessor (`PluginModRef::field_name()` returns
//!   `Option` for fields past the prefix) and fall back to a default;
//! - an appended field is a minor release (0.1.x → 0.1.y): old hosts load new
//!   plugins, new hosts refuse plugins that lack a field they require;
//! - anything else is a breaking change: bump the minor version while 0.x
//!   (0.1 → 0.2), which abi_stable reports as "incompatible package versions".
//!
//! abi_stable checks all of this at load time; the worker turns its (very long)
//! report into one line and shows the full text only with `--debug`.

#![deny(missing_docs)]

mod abi;
mod author;

pub use abi::{HandlerBox, PluginMod, PluginModRef, RHeader, RawHandler, RawHandler_TO};
pub use author::{Job, Params, Plugin};

/// Re-exported for the [`export_plugin!`] expansion; plugin authors never name it.
#[doc(hidden)]
pub use abi_stable;
/// Plugin parameters are JSON; re-exported so authors need no extra dependency.
pub use serde_json;

#[doc(hidden)]
pub mod __private {
    pub use crate::author::root_module;
}

/// Exports a [`Plugin`] implementation as this library's powerhose root module.
///
/// The plugin's name and version default to the crate's package name and
/// version; pass `name = "..."` to choose another service name.
///
/// The static below is what abi_stable's `#[export_root_module]` generates; it
/// is spelled out here so plugin crates need no direct abi_stable dependency.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        $crate::export_plugin!($ty, name = env!("CARGO_PKG_NAME"));
    };
    ($ty:ty, name = $name:expr) => {
        const _: () = {
            use $crate::abi_stable::library as __lib;

            fn __powerhose_root_module() -> $crate::PluginModRef {
                $crate::__private::root_module::<$ty>($name, env!("CARGO_PKG_VERSION"))
            }

            extern "C" fn __powerhose_erased_module() -> __lib::RootModuleResult {
                __lib::__call_root_module_loader(__powerhose_root_module)
            }

            // The symbol name is abi_stable's mangling of "_as.lib_header.root module loader".
            #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
            // SAFETY: from_constructor needs the loader's module to be an erased
            // `PluginModRef`, the type named here: `__call_root_module_loader`
            // erases exactly what `__powerhose_root_module` returns (as
            // abi_stable's own `#[export_root_module]` does).
            pub static __POWERHOSE_LIB_HEADER: __lib::LibHeader = unsafe {
                __lib::LibHeader::from_constructor::<$crate::PluginModRef>(
                    __powerhose_erased_module,
                    __lib::CheckTypeLayout::Yes,
                )
            };
        };
    };
}
