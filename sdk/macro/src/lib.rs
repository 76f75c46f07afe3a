//! The `#[picloud_sdk::handler]` attribute: turns a plain function into the
//! `handle` export of the `picloud:trigger/trigger` world.
//!
//! Rule: the user's function stays as written; the macro only adds the
//! export glue next to it, and every path it emits goes through
//! `::picloud_sdk::__private`, so a script depends on `picloud-sdk` alone.
//! Mistakes in the signature are reported on the offending tokens.

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input};

/// Mark the function that handles every event of this script.
///
/// It takes one [`Event`](../picloud_sdk/struct.Event.html) by value and
/// returns `Result<R, E>`, where `R` is a reply body (`()`, `Vec<u8>`,
/// `Option<Vec<u8>>`, `String`, `&str` or `serde_json::Value`) and `E` is
/// anything that implements `Display`. The SDK's `Error` keeps its kind
/// (`Error::permanent`, `Error::retry_after`); any other error is a
/// retryable message. There is one handler per script.
///
/// ```text
/// #[picloud_sdk::handler]
/// fn handle(event: picloud_sdk::Event) -> picloud_sdk::Result<()> {
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let func = parse_macro_input!(item as ItemFn);
    match expand(attr, &func) {
        Ok(tokens) => tokens.into(),
        // Keep the function, so the error is the only complaint.
        Err(e) => {
            let error = e.to_compile_error();
            quote!(#func #error).into()
        }
    }
}

fn expand(attr: proc_macro2::TokenStream, func: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "#[handler] takes no arguments",
        ));
    }
    let sig = &func.sig;
    if let Some(asyncness) = sig.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "the handler must not be async: host calls block until they return",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "the handler cannot be generic",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "the handler takes exactly one argument: `event: picloud_sdk::Event`",
        ));
    }
    let arg_span = match sig.inputs.len() {
        1 => match &sig.inputs[0] {
            FnArg::Typed(arg) if matches!(*arg.ty, syn::Type::Reference(_)) => {
                return Err(syn::Error::new_spanned(
                    &arg.ty,
                    "take `Event` by value: `event: picloud_sdk::Event` (the handler owns its event)",
                ));
            }
            FnArg::Typed(arg) => arg.ty.span(),
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "the handler is a free function taking `event: picloud_sdk::Event`",
                ));
            }
        },
        0 => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                "the handler takes exactly one argument: `event: picloud_sdk::Event`",
            ));
        }
        n => {
            return Err(syn::Error::new_spanned(
                &sig.inputs,
                format!(
                    "the handler takes exactly one argument, `event: picloud_sdk::Event`, not {n}"
                ),
            ));
        }
    };
    let output_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "the handler returns `Result<R, E>`, e.g. `picloud_sdk::Result<()>`",
            ));
        }
    };

    let name = &sig.ident;
    // Spanned at the user's argument type and return type, so a mismatch is
    // reported there rather than at the attribute.
    let event = quote_spanned!(arg_span=> __picloud_event);
    // An `Err` becomes the WIT `handler-error`: the SDK's `Error` keeps its
    // kind (permanent, retry-after), any other `Display` is a retryable
    // message. Method lookup on a reference to it picks `SdkFailure` for the SDK's
    // type and `DisplayFailure` for the rest (see `__private`).
    let finish = quote_spanned!(output_span=> match __picloud_outcome {
        ::core::result::Result::Ok(__picloud_reply) => {
            ::core::result::Result::Ok(::picloud_sdk::__private::reply(__picloud_reply))
        }
        ::core::result::Result::Err(__picloud_error) => {
            #[allow(unused_imports)]
            use ::picloud_sdk::__private::{DisplayFailure as _, SdkFailure as _};
            ::core::result::Result::Err((&__picloud_error).__picloud_handler_error())
        }
    });
    // A second `#[handler]` in the crate redefines this name, and rustc's
    // "the name `...` is defined multiple times" then reads as the fix.
    let handler_struct = quote!(only_one_handler_per_script__remove_the_other_handler_attribute);
    Ok(quote! {
        #func

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #handler_struct;

        impl ::picloud_sdk::__private::Guest for #handler_struct {
            fn handle(
                __picloud_raw: ::picloud_sdk::__private::RawEvent,
            ) -> ::core::result::Result<
                ::core::option::Option<::std::vec::Vec<u8>>,
                ::picloud_sdk::__private::RawHandlerError,
            > {
                let __picloud_event = ::picloud_sdk::__private::event(__picloud_raw);
                let __picloud_outcome = #name(#event);
                #finish
            }
        }

        ::picloud_sdk::__private::export!(
            #handler_struct with_types_in ::picloud_sdk::__private::bindings
        );
    })
}
