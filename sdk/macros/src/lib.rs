//! The attributes of `dstream-sdk`: `#[dstream::map]`, `#[dstream::filter]`,
//! and friends, plus `#[derive(dstream::Params)]`.
//!
//! Each attribute leaves the function as written (so it stays callable and
//! testable natively) and adds, under the same name, a hidden module holding
//! an `OPERATOR` constant: the operator's description and a function that runs
//! it over a whole partition. Use them through `dstream-sdk`, whose docs show
//! the signatures.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{
    Data, DeriveInput, Error, Expr, Fields, FnArg, GenericArgument, ItemFn, Lit, Meta, Pat,
    PathArguments, ReturnType, Type, TypeParamBound,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    FlatMap,
    Filter,
    Reduce,
    Inverse,
    UpdateState,
    Transform,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::FlatMap => "flat_map",
            Kind::Filter => "filter",
            Kind::Reduce => "reduce",
            Kind::Inverse => "inverse",
            Kind::UpdateState => "update_state",
            Kind::Transform => "transform",
        }
    }

    fn variant(self) -> TokenStream2 {
        match self {
            Kind::Map => quote!(Map),
            Kind::FlatMap => quote!(FlatMap),
            Kind::Filter => quote!(Filter),
            Kind::Reduce => quote!(Reduce),
            Kind::Inverse => quote!(Inverse),
            Kind::UpdateState => quote!(UpdateState),
            Kind::Transform => quote!(Transform),
        }
    }

    fn shape(self) -> &'static str {
        match self {
            Kind::Map => "fn(value: V) -> R or fn(key: K, value: V) -> R",
            Kind::FlatMap => "fn(value: V) -> Vec<R> or fn(key: K, value: V) -> Vec<R>",
            Kind::Filter => {
                "fn(value: V) -> bool, fn(key: K, value: V) -> bool or fn(records: Records<'_>) -> Vec<u32>"
            }
            Kind::Reduce => "fn(a: V, b: V) -> V",
            Kind::Inverse => "fn(current: V, leaving: V) -> V",
            Kind::UpdateState => "fn(key: K, values: Vec<V>, state: Option<S>) -> Option<S>",
            Kind::Transform => "fn(records: Vec<(K, V)>) -> Vec<R>",
        }
    }
}

/// A map operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, attr, item)
}

/// A flat-map operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn flat_map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::FlatMap, attr, item)
}

/// A filter operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, attr, item)
}

/// A reduce operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn reduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Reduce, attr, item)
}

/// An inverse operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn inverse(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Inverse, attr, item)
}

/// An update-state operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn update_state(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::UpdateState, attr, item)
}

/// A transform operator. See `dstream-sdk`.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Transform, attr, item)
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let f: ItemFn = match syn::parse(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            // Not a function at all (a struct, say): say what the attribute
            // goes on rather than "expected `fn`".
            let e = match syn::parse::<syn::Item>(item) {
                Ok(other) if !matches!(other, syn::Item::Fn(_)) => Error::new_spanned(
                    other,
                    format!("#[dstream::{}] goes on a function", kind.attr()),
                ),
                _ => e,
            };
            return e.into_compile_error().into();
        }
    };
    match operator(kind, attr.into(), &f) {
        Ok(ts) => ts.into(),
        // Keep the function so that one mistake gives one error.
        Err(e) => {
            let e = e.into_compile_error();
            quote!(#f #e).into()
        }
    }
}

/// The path of `dstream-sdk` as the calling crate names it.
fn sdk() -> TokenStream2 {
    use proc_macro_crate::{FoundCrate, crate_name};
    match crate_name("dstream-sdk") {
        Ok(FoundCrate::Name(name)) => {
            let id = format_ident!("{}", name);
            quote!(::#id)
        }
        _ => quote!(::dstream_sdk),
    }
}

/// Doc comments joined into one description.
fn docs(attrs: &[syn::Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => Some(s.value().trim().to_string()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    // Lines of a paragraph join with spaces (doc comments wrap at a column,
    // descriptions should not); blank lines separate paragraphs.
    let mut out = String::new();
    for line in lines {
        if line.is_empty() {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(&line);
        }
    }
    out
}

/// Replaces every lifetime (named or elided) by `'static`, so that a type from
/// a signature can be named in a constant.
struct Static;

impl VisitMut for Static {
    fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
        r.lifetime = Some(syn::Lifetime::new("'static", Span::call_site()));
        syn::visit_mut::visit_type_reference_mut(self, r);
    }
    fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
        *l = syn::Lifetime::new("'static", l.span());
    }
}

/// Replaces every named lifetime by `'_`, so that a type from a signature can
/// be named inside the generated function (where the signature's lifetime
/// parameters are not in scope).
struct Elide;

impl VisitMut for Elide {
    fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
        r.lifetime = None;
        syn::visit_mut::visit_type_reference_mut(self, r);
    }
    fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
        *l = syn::Lifetime::new("'_", l.span());
    }
}

fn elide(ty: &Type) -> Type {
    let mut ty = ty.clone();
    Elide.visit_type_mut(&mut ty);
    ty
}

fn statik(ty: &Type) -> Type {
    let mut ty = ty.clone();
    Static.visit_type_mut(&mut ty);
    ty
}

/// `T` of `Wrapper<T>` when the last path segment is `name`.
fn unwrap<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// The item type of a `Vec<T>`, `Option<T>`, `impl Iterator<Item = T>` or
/// `impl IntoIterator<Item = T>`.
fn item_of(ty: &Type) -> Option<&Type> {
    if let Some(t) = unwrap(ty, "Vec").or_else(|| unwrap(ty, "Option")) {
        return Some(t);
    }
    let Type::ImplTrait(it) = ty else { return None };
    it.bounds.iter().find_map(|b| match b {
        TypeParamBound::Trait(t) => {
            let seg = t.path.segments.last()?;
            if seg.ident != "Iterator" && seg.ident != "IntoIterator" {
                return None;
            }
            let PathArguments::AngleBracketed(args) = &seg.arguments else {
                return None;
            };
            args.args.iter().find_map(|a| match a {
                GenericArgument::AssocType(at) if at.ident == "Item" => Some(&at.ty),
                _ => None,
            })
        }
        _ => None,
    })
}

/// A type as the user would write it, for messages.
fn show(ty: &Type) -> String {
    let mut s = quote!(#ty).to_string();
    for (from, to) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        (" ::", "::"),
        (":: ", "::"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
    ] {
        s = s.replace(from, to);
    }
    s
}

/// Fails unless `b` is written as `a` (up to lifetimes), pointing at `b`.
fn same(a: &Type, b: &Type, what: &str) -> syn::Result<()> {
    let (x, y) = (elide(a), elide(b));
    if quote!(#x).to_string() == quote!(#y).to_string() {
        Ok(())
    } else {
        Err(Error::new_spanned(
            b,
            format!("{what}: expected `{}`, found `{}`", show(a), show(b)),
        ))
    }
}

/// True for the value types of the SDK that own their data: numbers, `bool`,
/// `String`, `Vec<u8>` and `()`. A reduce over them can keep its values from
/// one chunk of a pipeline to the next. (A type is recognised by its name;
/// anything else, borrowed or not, takes the general path.)
fn owned(ty: &Type) -> bool {
    const NAMES: [&str; 12] = [
        "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "bool", "String",
    ];
    match ty {
        Type::Tuple(t) => t.elems.is_empty(),
        Type::Paren(p) => owned(&p.elem),
        Type::Path(p) if p.qself.is_none() => {
            let Some(last) = p.path.segments.last() else {
                return false;
            };
            match &last.arguments {
                PathArguments::None => NAMES.iter().any(|n| last.ident == n),
                PathArguments::AngleBracketed(_) => {
                    last.ident == "Vec"
                        && unwrap(ty, "Vec")
                            .is_some_and(|t| matches!(t, Type::Path(u) if u.path.is_ident("u8")))
                }
                PathArguments::Parenthesized(_) => false,
            }
        }
        _ => false,
    }
}

/// True for `Records<'_>` (by its last path segment): the partition form of
/// a filter.
fn is_records(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Records"))
}

/// `T` when `ty` is `&T` and `T` is not `str` or `[u8]`: the params argument.
fn params_type(ty: &Type) -> Option<&Type> {
    let Type::Reference(r) = ty else { return None };
    match &*r.elem {
        Type::Path(p) if p.path.is_ident("str") => None,
        Type::Slice(_) => None,
        t => Some(t),
    }
}

fn operator(kind: Kind, attr: TokenStream2, f: &ItemFn) -> syn::Result<TokenStream2> {
    let sdk = sdk();
    let name = &f.sig.ident;
    let vis = &f.vis;
    let sig = &f.sig;
    let shape = kind.shape();
    if !attr.is_empty() {
        return Err(Error::new_spanned(
            attr,
            format!(
                "#[dstream::{}] takes no arguments (the operator is named after the function)",
                kind.attr()
            ),
        ));
    }
    if let Some(a) = &sig.asyncness {
        return Err(Error::new(
            a.span(),
            "an operator cannot be async: it runs synchronously over a partition",
        ));
    }
    if let Some(u) = &sig.unsafety {
        return Err(Error::new(u.span(), "an operator cannot be unsafe"));
    }
    if let Some(p) = sig.generics.type_params().next() {
        return Err(Error::new_spanned(
            p,
            "an operator cannot be generic: its key and value types must be concrete",
        ));
    }
    if let Some(p) = sig.generics.const_params().next() {
        return Err(Error::new_spanned(
            p,
            "an operator cannot be generic: its key and value types must be concrete",
        ));
    }
    let mut types: Vec<&Type> = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(Error::new_spanned(
                    r,
                    "an operator is a free function, not a method: remove `self`",
                ));
            }
            FnArg::Typed(t) => {
                if !matches!(&*t.pat, Pat::Ident(_) | Pat::Wild(_)) {
                    return Err(Error::new_spanned(
                        &t.pat,
                        "use a plain argument name here (destructure in the body)",
                    ));
                }
                types.push(&t.ty);
            }
        }
    }
    // A trailing `&P` (other than `&str` and `&[u8]`) receives the parameters.
    let params = types.last().and_then(|t| params_type(t)).cloned();
    if params.is_some() {
        types.pop();
    }
    let data: Vec<Type> = types.into_iter().map(elide).collect();
    let data: Vec<&Type> = data.iter().collect();
    let want = match kind {
        Kind::Map | Kind::FlatMap | Kind::Filter => 1..=2,
        Kind::Reduce | Kind::Inverse => 2..=2,
        Kind::UpdateState => 3..=3,
        Kind::Transform => 1..=1,
    };
    if !want.contains(&data.len()) {
        let n = data.len();
        let found = match &params {
            Some(p) => format!(
                "found {n} argument{} besides the parameters `&{}`",
                if n == 1 { "" } else { "s" },
                show(p)
            ),
            None => format!("found {n} argument{}", if n == 1 { "" } else { "s" }),
        };
        return Err(Error::new(
            // The whole argument list, parentheses included.
            sig.paren_token.span.join(),
            format!(
                "#[dstream::{}] expects {shape}, optionally with a last `&P` argument for parameters; {found}",
                kind.attr()
            ),
        ));
    }
    let ReturnType::Type(_, ret) = &sig.output else {
        return Err(Error::new_spanned(
            sig,
            format!(
                "#[dstream::{}] expects {shape}: add a return type",
                kind.attr()
            ),
        ));
    };
    let (ret, fallible) = match unwrap(ret, "Result") {
        Some(t) => (t, true),
        None => (&**ret, false),
    };

    let doc = docs(&f.attrs);
    let op_name = name.to_string();
    let params_ty = params
        .clone()
        .map(|t| statik(&t))
        .unwrap_or(syn::parse_quote!(()));
    // Inside the generated function, `&P` may borrow: name it as written.
    let params_local = params.as_ref().map(elide).unwrap_or(syn::parse_quote!(()));
    let pass_params = params.as_ref().map(|_| quote!(, &__params));
    let dec = |t: &Type| {
        let t = statik(t);
        quote!(<#t as #sdk::__private::Decode<'static>>::ENCODING)
    };
    let none = quote!(#sdk::Encoding::None);
    let check = |r: TokenStream2, idx: TokenStream2| {
        if fallible {
            quote!(#sdk::__private::at(#r, #idx)?)
        } else {
            r
        }
    };
    let ok_wrap = |call: TokenStream2| {
        if fallible {
            call
        } else {
            quote!(::core::result::Result::Ok::<_, ::core::convert::Infallible>(#call))
        }
    };
    let item = || {
        item_of(ret).ok_or_else(|| {
            Error::new_spanned(
                ret,
                format!(
                    "#[dstream::{}] must return Vec<R>, Option<R>, impl Iterator<Item = R> or impl IntoIterator<Item = R> (optionally in a Result), so that the type R of its records shows in the signature",
                    kind.attr()
                ),
            )
        })
    };
    // Writes a returned record, naming its type as written so that a type
    // that is no record points at the signature, not at the attribute.
    let emit = |ty: &Type, record: TokenStream2| {
        let ty = elide(ty);
        quote!(<#ty as #sdk::Emit>::emit_to(#record, __out)?;)
    };
    let get_params = quote!(let __params = #sdk::__private::params::<#params_local>(__raw)?;);
    // A map or flat-map runs over the records once, generic over where it
    // writes: a batch, or the sink a pipeline gives it (the reduce after it).
    // It is also this module's `__Stage` that feeds: fused with a reduce
    // after it in a pipeline, it writes to the reduce's groups directly.
    let per_record = |encodings: TokenStream2, body: TokenStream2| {
        let stage = quote! {
            impl #sdk::__private::Stage for __Stage {
                const FEEDS: bool = true;
                #[inline(always)]
                fn each<__O: #sdk::__private::Out + ?::core::marker::Sized>(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut __O) -> ::core::result::Result<(), #sdk::OpError> {
                    #get_params
                    for (__base, __part, __ascii) in #sdk::__private::windows(__input, #encodings) {
                        for (__j, (__k, __v)) in __part.iter().enumerate() {
                            let __i = __base + __j;
                            let _ = __k;
                            #body
                        }
                    }
                    ::core::result::Result::Ok(())
                }
            }
        };
        let runner = quote! {
            fn __run(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut #sdk::Batch) -> ::core::result::Result<(), #sdk::OpError> {
                <__Stage as #sdk::__private::Stage>::each(__input, __raw, __out)
            }
            fn __feed(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut dyn #sdk::Sink) -> ::core::result::Result<(), #sdk::OpError> {
                <__Stage as #sdk::__private::Stage>::each(__input, __raw, __out)
            }
            #sdk::Runner::PerRecord(__run, __feed)
        };
        (runner, Some(stage))
    };

    // How this operator's `__Stage` runs fused with a neighbour (by default,
    // never).
    let mut stage: Option<TokenStream2> = None;
    let (input_enc, output_enc, runner) = match kind {
        // A filter over the whole partition: `fn(records: Records<'_>) ->
        // indices`, for operators that search the partition's bytes in one
        // pass (see `dstream::text::values_containing`).
        Kind::Filter if data.len() == 1 && is_records(data[0]) => {
            let kept =
                item_of(ret).filter(|t| matches!(t, Type::Path(p) if p.path.is_ident("u32")));
            if kept.is_none() {
                return Err(Error::new_spanned(
                    ret,
                    "#[dstream::filter] over a partition returns the indices of the records it keeps, ascending: Vec<u32>, impl Iterator<Item = u32> or impl IntoIterator<Item = u32> (optionally in a Result)",
                ));
            }
            let call = quote!(super::#name(__input #pass_params));
            let r = if fallible {
                quote!(#call.map_err(#sdk::OpError::new)?)
            } else {
                call
            };
            // Declared like `fn(value: &[u8]) -> bool`: values read as
            // bytes, keys passed through (so tools feed it unkeyed lines).
            let bytes = (quote!(#sdk::Encoding::None), quote!(#sdk::Encoding::Bytes));
            let body = quote! {
                fn __run(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __keep: &mut ::std::vec::Vec<u32>) -> ::core::result::Result<(), #sdk::OpError> {
                    #get_params
                    #sdk::__private::keep(__input.len(), #r, __keep)
                }
                #sdk::Runner::Select(__run)
            };
            (bytes.clone(), bytes, body)
        }
        Kind::Map | Kind::FlatMap | Kind::Filter => {
            let (kt, vt) = if data.len() == 2 {
                (Some(data[0]), data[1])
            } else {
                (None, data[0])
            };
            let key_arg =
                kt.map(|t| quote!(#sdk::__private::decode_in::<#t>(__k, __ascii, __i, "key")?,));
            let call = quote!(super::#name(#key_arg #sdk::__private::decode_in::<#vt>(__v, __ascii, __i, "value")? #pass_params));
            // Text input is checked for ASCII once per window of records
            // (`__ascii`), not record by record.
            let key_enc = kt.map_or(
                quote!(#sdk::Encoding::None),
                |t| quote!(#sdk::__private::input_encoding::<#t>()),
            );
            let encodings = quote!([#key_enc, #sdk::__private::input_encoding::<#vt>()]);
            let r = check(call, quote!(__i));
            let input_enc = (kt.map(dec).unwrap_or(none.clone()), dec(vt));
            match kind {
                Kind::Filter => {
                    if !matches!(ret, Type::Path(p) if p.path.is_ident("bool")) {
                        return Err(Error::new_spanned(
                            ret,
                            "#[dstream::filter] must return bool or Result<bool, E>",
                        ));
                    }
                    let out = input_enc.clone();
                    let body = quote! {
                        fn __run(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __keep: &mut ::std::vec::Vec<u32>) -> ::core::result::Result<(), #sdk::OpError> {
                            #get_params
                            for (__base, __part, __ascii) in #sdk::__private::windows(__input, #encodings) {
                                for (__j, (__k, __v)) in __part.iter().enumerate() {
                                    let __i = __base + __j;
                                    let _ = __k;
                                    let __r: bool = #r;
                                    if __r { __keep.push(__i as u32); }
                                }
                            }
                            ::core::result::Result::Ok(())
                        }
                        #sdk::Runner::Select(__run)
                    };
                    (input_enc, out, body)
                }
                Kind::Map => {
                    let emit_one = emit(ret, r);
                    let rt = statik(ret);
                    let out = (
                        quote!(<#rt as #sdk::Emit>::KEY),
                        quote!(<#rt as #sdk::Emit>::VALUE),
                    );
                    let (runner, st) = per_record(encodings.clone(), emit_one);
                    stage = st;
                    (input_enc, out, runner)
                }
                _ => {
                    let it = item()?;
                    let emit_item = emit(it, quote!(__item));
                    let it = statik(it);
                    let out = (
                        quote!(<#it as #sdk::Emit>::KEY),
                        quote!(<#it as #sdk::Emit>::VALUE),
                    );
                    let (body, st) = per_record(
                        encodings,
                        quote! {
                            for __item in ::core::iter::IntoIterator::into_iter(#r) {
                                #emit_item
                            }
                        },
                    );
                    stage = st;
                    (input_enc, out, body)
                }
            }
        }
        Kind::Reduce | Kind::Inverse => {
            let vt = data[0];
            let attr = kind.attr();
            same(
                vt,
                data[1],
                &format!("#[dstream::{attr}] takes two values of one type"),
            )?;
            same(
                vt,
                ret,
                &format!("#[dstream::{attr}] returns the type of the values it takes"),
            )?;
            let enc = (quote!(#sdk::Encoding::Bytes), dec(vt));
            let call = ok_wrap(quote!(super::#name(__a, __b #pass_params)));
            let body = if kind == Kind::Reduce {
                let run = quote! {
                    fn __run(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut #sdk::Batch) -> ::core::result::Result<(), #sdk::OpError> {
                        #get_params
                        #sdk::__private::reduce::<#vt, _, _>(__input, __out, |__a, __b| #call)
                    }
                };
                if owned(vt) {
                    // Values that own their data can be kept from one chunk of
                    // a pipeline to the next.
                    // Its `__Stage` folds: fused after a map or flat-map.
                    stage = Some(quote! {
                        fn __combining(__raw: &#sdk::RawParams<'_>) -> ::core::result::Result<impl #sdk::Combine + #sdk::__private::FoldIn + 'static, #sdk::OpError> {
                            #get_params
                            ::core::result::Result::Ok(#sdk::__private::combining::<#vt, _, _>(move |__a, __b| #call))
                        }
                        impl #sdk::__private::Stage for __Stage {
                            const FOLDS: bool = true;
                            fn after<__F: #sdk::__private::Stage>(__input: #sdk::Records<'_>, __first: &#sdk::RawParams<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut #sdk::Batch) -> ::core::result::Result<(), #sdk::__private::FusedError> {
                                let __fold = __combining(__raw).map_err(|__e| #sdk::__private::FusedError { stage: 1, error: __e })?;
                                #sdk::__private::run_fused::<__F, _>(__input, __first, __fold, __out)
                            }
                            fn start_after<__F: #sdk::__private::Stage>(__first: &#sdk::RawParams<'_>, __raw: &#sdk::RawParams<'_>) -> ::core::result::Result<::std::boxed::Box<dyn #sdk::Pieces>, #sdk::__private::FusedError> {
                                let __fold = __combining(__raw).map_err(|__e| #sdk::__private::FusedError { stage: 1, error: __e })?;
                                ::core::result::Result::Ok(#sdk::__private::start_fused::<__F, _>(__first, __fold))
                            }
                        }
                    });
                    quote! {
                        #run
                        fn __combiner(__raw: &#sdk::RawParams<'_>) -> ::core::result::Result<::std::boxed::Box<dyn #sdk::Combine>, #sdk::OpError> {
                            ::core::result::Result::Ok(::std::boxed::Box::new(__combining(__raw)?))
                        }
                        #sdk::Runner::Reduce(__run, __combiner)
                    }
                } else {
                    quote! {
                        #run
                        #sdk::Runner::OneInput(__run)
                    }
                }
            } else {
                quote! {
                    fn __run(__current: #sdk::Records<'_>, __leaving: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut #sdk::Batch) -> ::core::result::Result<(), #sdk::OpError> {
                        #get_params
                        #sdk::__private::inverse::<#vt, _, _>(__current, __leaving, __out, |__a, __b| #call)
                    }
                    #sdk::Runner::TwoInput(__run)
                }
            };
            (enc.clone(), enc, body)
        }
        Kind::UpdateState => {
            let kt = data[0];
            let vt = unwrap(data[1], "Vec").ok_or_else(|| {
                Error::new_spanned(
                    data[1],
                    "#[dstream::update_state] takes the new values of a key as Vec<V>",
                )
            })?;
            let st = unwrap(data[2], "Option").ok_or_else(|| {
                Error::new_spanned(
                    data[2],
                    "#[dstream::update_state] takes the old state of a key as Option<S> (None for a new key)",
                )
            })?;
            let Some(new_st) = unwrap(ret, "Option") else {
                return Err(Error::new_spanned(
                    ret,
                    "#[dstream::update_state] must return Option<S> (None drops the key)",
                ));
            };
            same(
                st,
                new_st,
                "#[dstream::update_state] returns the new state with the type of the old one",
            )?;
            let call = ok_wrap(quote!(super::#name(__key, __values, __state #pass_params)));
            let body = quote! {
                fn __run(__input: #sdk::Records<'_>, __state: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut #sdk::Batch) -> ::core::result::Result<(), #sdk::OpError> {
                    #get_params
                    #sdk::__private::update_state::<#kt, #vt, #st, _, _>(__input, __state, __out, |__key, __values, __state| #call)
                }
                #sdk::Runner::TwoInput(__run)
            };
            ((dec(kt), dec(vt)), (dec(kt), dec(st)), body)
        }
        Kind::Transform => {
            let pair = unwrap(data[0], "Vec").and_then(|t| match t {
                Type::Tuple(tt) if tt.elems.len() == 2 => Some((&tt.elems[0], &tt.elems[1])),
                _ => None,
            });
            let Some((kt, vt)) = pair else {
                return Err(Error::new_spanned(
                    data[0],
                    "#[dstream::transform] takes the partition as Vec<(K, V)>, key and value of every record",
                ));
            };
            let it = item()?;
            let emit_item = emit(it, quote!(__item));
            let it = statik(it);
            let call = quote!(super::#name(__records #pass_params));
            let r = if fallible {
                quote!(#call.map_err(#sdk::OpError::new)?)
            } else {
                call
            };
            let body = quote! {
                fn __run(__input: #sdk::Records<'_>, __raw: &#sdk::RawParams<'_>, __out: &mut #sdk::Batch) -> ::core::result::Result<(), #sdk::OpError> {
                    #get_params
                    let __records = #sdk::__private::decode_all::<#kt, #vt>(__input)?;
                    for __item in ::core::iter::IntoIterator::into_iter(#r) {
                        #emit_item
                    }
                    ::core::result::Result::Ok(())
                }
                #sdk::Runner::OneInput(__run)
            };
            (
                (dec(kt), dec(vt)),
                (
                    quote!(<#it as #sdk::Emit>::KEY),
                    quote!(<#it as #sdk::Emit>::VALUE),
                ),
                body,
            )
        }
    };
    let variant = kind.variant();
    let (ik, iv) = input_enc;
    let (ok, ov) = output_enc;
    let mod_doc = format!("The dstream operator made from [`{name}()`](fn@{name}).");
    let stage_impl = stage.unwrap_or_else(|| quote!(impl #sdk::__private::Stage for __Stage {}));
    Ok(quote! {
        #f

        #[doc = #mod_doc]
        #[allow(non_snake_case, unreachable_pub, clippy::needless_question_mark, clippy::let_unit_value)]
        #vis mod #name {
            #[allow(unused_imports)]
            use super::*;
            #[doc(hidden)]
            pub struct __Stage;
            #stage_impl
            /// The operator.
            pub const OPERATOR: #sdk::Operator = #sdk::Operator {
                name: #op_name,
                kind: #sdk::Kind::#variant,
                description: #doc,
                params: <#params_ty as #sdk::Params>::specs,
                input: (#ik, #iv),
                output: (#ok, #ov),
                runner: { #runner },
            };
        }
    })
}

/// True for `bool`, `char` and the number types.
fn primitive(ty: &Type) -> bool {
    const NAMES: [&str; 15] = [
        "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
        "i128", "f32", "f64",
    ];
    matches!(ty, Type::Path(p) if NAMES.iter().any(|n| p.path.is_ident(n)))
}

/// Derives `dstream_sdk::Params` for a struct with named fields.
#[proc_macro_derive(Params, attributes(param))]
pub fn derive_params(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as DeriveInput);
    match params(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.into_compile_error().into(),
    }
}

fn params(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let sdk = sdk();
    let name = &input.ident;
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(fields) => fields,
            Fields::Unnamed(fields) => {
                return Err(Error::new_spanned(
                    fields,
                    "#[derive(Params)] needs named fields: each field is the parameter of its name",
                ));
            }
            Fields::Unit => {
                return Err(Error::new_spanned(
                    &input.ident,
                    "#[derive(Params)] needs named fields (write `struct Name {}` for no parameters)",
                ));
            }
        },
        Data::Enum(e) => {
            return Err(Error::new(
                e.enum_token.span,
                "#[derive(Params)] needs a struct with named fields, not an enum",
            ));
        }
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span,
                "#[derive(Params)] needs a struct with named fields, not a union",
            ));
        }
    };
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &input.generics,
            "#[derive(Params)] needs a struct without generic parameters",
        ));
    }
    let mut specs = Vec::new();
    let mut inits = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let pname = ident.to_string();
        let desc = docs(&field.attrs);
        let mut default: Option<Expr> = None;
        // A function of the type (not a method call) so that a type that
        // does not parse points at the field's type, not at the derive.
        let parse = |ty: &Type| quote!(#sdk::__private::param::<#ty>(__raw, #pname)?);
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("param")) {
            attr.parse_nested_meta(|m| {
                if m.path.is_ident("default") {
                    default = Some(m.value()?.parse()?);
                    Ok(())
                } else {
                    let path = &m.path;
                    Err(m.error(format!(
                        "unknown parameter option `{}`: the only one is `default = ...`",
                        quote!(#path).to_string().replace(' ', "")
                    )))
                }
            })?;
        }
        let (init, required) = match (unwrap(&field.ty, "Option"), default) {
            (Some(inner), None) => (parse(inner), false),
            (Some(_), Some(d)) => {
                return Err(Error::new_spanned(
                    d,
                    "an Option parameter has no default: it is None when not given",
                ));
            }
            (None, Some(d)) => {
                let ty = &field.ty;
                // A string literal converts (to String, say) unless the field
                // is a primitive (where `Into` would only list the types
                // that do convert); anything else must already have the
                // field's type (integer literals do).
                let dv = match &d {
                    Expr::Lit(l) if matches!(l.lit, Lit::Str(_)) && !primitive(ty) => {
                        quote!(::core::convert::Into::<#ty>::into(#d))
                    }
                    _ => quote!({ let __d: #ty = #d; __d }),
                };
                let parsed = parse(ty);
                (
                    quote!(match #parsed {
                        ::core::option::Option::Some(v) => v,
                        ::core::option::Option::None => #dv,
                    }),
                    false,
                )
            }
            (None, None) => {
                let parse_ty = parse(&field.ty);
                (
                    quote!(#parse_ty.ok_or_else(|| ::std::format!("missing required parameter `{}`", #pname))?),
                    true,
                )
            }
        };
        specs.push(
            quote!(#sdk::ParamSpec { name: #pname, description: #desc, required: #required }),
        );
        inits.push(quote!(#ident: #init));
    }
    Ok(quote! {
        impl #sdk::Params for #name {
            fn specs() -> ::std::vec::Vec<#sdk::ParamSpec> {
                ::std::vec![#(#specs),*]
            }
            fn from_params(__raw: &#sdk::RawParams<'_>) -> ::core::result::Result<Self, ::std::string::String> {
                __raw.check_known(&<Self as #sdk::Params>::specs())?;
                ::core::result::Result::Ok(Self { #(#inits),* })
            }
        }
    })
}
