//! The `#[picloud_sdk::handler]` attribute: turns a plain function into the
//! `handle` export of the `picloud:trigger/trigger` world.
//!
//! Rule: the user's function stays as written; the macro only adds the
//! export glue next to it, and every path it emits goes through
//! `::picloud_sdk::__private`, so a script depends on `picloud-sdk` alone.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, ReturnType, parse_macro_input};

/// Mark the function that handles every event of this script.
///
/// It takes one [`Event`](../picloud_sdk/struct.Event.html) by value and
/// returns `Result<R, E>`, where `R` is a reply body (`()`, `Vec<u8>`,
/// `Option<Vec<u8>>`, `String`, `&'static str` or `serde_json::Value`) and
/// `E` is anything that implements `Display`. There is one handler per script.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr: proc_macro2::TokenStream = attr.into();
        return syn::Error::new_spanned(attr, "#[handler] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let sig = &func.sig;
    let problem = if sig.asyncness.is_some() {
        Some("the handler must not be async: host calls block until they return")
    } else if sig.inputs.len() != 1 {
        Some("the handler takes exactly one argument: `event: picloud_sdk::Event`")
    } else if !sig.generics.params.is_empty() {
        Some("the handler cannot be generic")
    } else if matches!(sig.output, ReturnType::Default) {
        Some("the handler returns `Result<R, E>`, e.g. `picloud_sdk::Result<()>`")
    } else {
        None
    };
    if let Some(message) = problem {
        return syn::Error::new_spanned(sig, message)
            .to_compile_error()
            .into();
    }
    let name = &sig.ident;
    quote! {
        #func

        #[doc(hidden)]
        struct __PicloudHandler;

        impl ::picloud_sdk::__private::bindings::Guest for __PicloudHandler {
            fn handle(
                event: ::picloud_sdk::__private::bindings::picloud::trigger::types::Event,
            ) -> ::core::result::Result<::core::option::Option<::std::vec::Vec<u8>>, ::std::string::String> {
                ::picloud_sdk::__private::run(event, #name)
            }
        }

        ::picloud_sdk::__private::bindings::export!(
            __PicloudHandler with_types_in ::picloud_sdk::__private::bindings
        );
    }
    .into()
}
