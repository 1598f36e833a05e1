//! Typed views of keys and values.
//!
//! Keys and values cross the boundary as bytes. An operator names the types it
//! wants in its signature, and these traits turn bytes into them and back:
//!
//! | Rust type | bytes |
//! |---|---|
//! | `&str`, `String` | UTF-8 text |
//! | `&[u8]`, `Vec<u8>` | raw bytes |
//! | `u8`..`u64`, `i8`..`i64`, `f32`, `f64` | little-endian |
//! | `bool` | one byte, 0 or 1 |
//! | `()` | nothing |
//! | [`Postcard<T>`] for any serde type `T` | postcard |

use std::fmt;

use crate::batch::Batch;
use crate::operator::{OpError, Refused, Sink};

/// How a key or value is encoded (mirrors `encoding` in the WIT contract), so
/// that tools such as `dstream test-op` can read and print records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No data: an unkeyed record's key, a unit value, or an input the
    /// operator ignores.
    None,
    /// Opaque bytes.
    Bytes,
    /// UTF-8 text.
    Utf8,
    /// Little-endian `u8`.
    U8,
    /// Little-endian `u16`.
    U16,
    /// Little-endian `u32`.
    U32,
    /// Little-endian `u64`.
    U64,
    /// Little-endian `i8`.
    I8,
    /// Little-endian `i16`.
    I16,
    /// Little-endian `i32`.
    I32,
    /// Little-endian `i64`.
    I64,
    /// Little-endian `f32`.
    F32,
    /// Little-endian `f64`.
    F64,
    /// One byte, 0 or 1.
    Boolean,
    /// A serde value encoded with postcard.
    Postcard,
}

/// Why bytes could not be decoded into the type an operator asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// What was expected, e.g. "u64 (8 bytes)".
    pub expected: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}: {}", self.expected, self.detail)
    }
}

impl std::error::Error for DecodeError {}

/// A type an operator can take as a key or value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a key, value or state of a dstream operator",
    label = "not a type dstream can decode",
    note = "use &str, String, &[u8], Vec<u8>, u8..u64, i8..i64, f32, f64, bool, (), or Postcard<T> for any serde type"
)]
pub trait Decode<'a>: Sized {
    /// How the bytes are encoded.
    const ENCODING: Encoding;
    /// Reads a value from exactly these bytes.
    fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError>;
    /// [`Decode::decode`] without saying why it failed: what the generated
    /// code calls on every record, so that no error is built on that path
    /// (it decodes again to report one).
    #[doc(hidden)]
    #[inline]
    fn try_decode(bytes: &'a [u8]) -> Option<Self> {
        Self::decode(bytes).ok()
    }
    /// [`Decode::try_decode`] of bytes that may lie within a whole input
    /// already found to be ASCII: text needs no check of its own then.
    #[doc(hidden)]
    #[inline]
    fn try_decode_in(bytes: &'a [u8], ascii: Option<Ascii<'a>>) -> Option<Self> {
        let _ = ascii;
        Self::try_decode(bytes)
    }
}

/// Bytes found to be all ASCII by one check over a whole input, so that any
/// part of them is UTF-8 text without a check of its own. (Checking each
/// record with `str::from_utf8` was 5% of wordcount's `split` in the
/// sandbox: a call per record, four bytes at a time on wasm32.)
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Ascii<'a> {
    bytes: &'a [u8],
}

impl<'a> Ascii<'a> {
    /// `bytes`, if every one of them is ASCII.
    pub fn check(bytes: &'a [u8]) -> Option<Self> {
        all_ascii(bytes).then_some(Self { bytes })
    }

    /// `part` as text, if it lies within the checked bytes.
    #[inline(always)]
    pub fn text(self, part: &'a [u8]) -> Option<&'a str> {
        let all = self.bytes.as_ptr_range();
        let p = part.as_ptr_range();
        if all.start <= p.start && p.end <= all.end {
            // SAFETY: `part` lies within `self.bytes`, which `check` found to
            // be all ASCII, and ASCII is UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(part) })
        } else {
            None
        }
    }
}

/// Whether every byte is ASCII, 64 bytes at a time: four 16-byte loads
/// ORed together, then one test of their high bits (`simd128` in the
/// sandbox, where LLVM's own vectorisation of a byte loop ORs one vector a
/// step; plain `u64`s elsewhere, which LLVM vectorises itself).
fn all_ascii(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        let block: &[u8; 64] = block.try_into().expect("64 bytes");
        if !ascii64(block) {
            return false;
        }
    }
    blocks.remainder().is_ascii()
}

#[inline(always)]
fn ascii64(block: &[u8; 64]) -> bool {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use core::arch::wasm32::*;
        let p = block.as_ptr();
        // SAFETY: `block` is 64 readable bytes; v128_load has no alignment
        // requirement.
        let (a, b, c, d) = unsafe {
            (
                v128_load(p.cast()),
                v128_load(p.add(16).cast()),
                v128_load(p.add(32).cast()),
                v128_load(p.add(48).cast()),
            )
        };
        u8x16_bitmask(v128_or(v128_or(a, b), v128_or(c, d))) == 0
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let word = |i: usize| u64::from_le_bytes(block[i..i + 8].try_into().expect("8 bytes"));
        let acc = (word(0) | word(8))
            | (word(16) | word(24))
            | (word(32) | word(40))
            | (word(48) | word(56));
        acc & 0x8080_8080_8080_8080 == 0
    }
}

/// A type an operator can return as a key or value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a key, value or state of a dstream operator",
    label = "not a type dstream can encode",
    note = "use &str, String, &[u8], Vec<u8>, u8..u64, i8..i64, f32, f64, bool, (), or Postcard<T> for any serde type"
)]
pub trait Encode {
    /// How the bytes are encoded.
    const ENCODING: Encoding;
    /// Appends the bytes of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Calls `f` with the bytes of `self`: borrowed for text and bytes, on
    /// the stack for numbers, encoded into a new buffer otherwise (the
    /// default). How records reach a [`Sink`](crate::Sink) without a copy.
    #[doc(hidden)]
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        f(&bytes)
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    const ENCODING: Encoding = T::ENCODING;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out)
    }
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        (**self).with_bytes(f)
    }
}

impl<'a> Decode<'a> for &'a [u8] {
    const ENCODING: Encoding = Encoding::Bytes;
    #[inline]
    fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(bytes)
    }
}

impl Decode<'_> for Vec<u8> {
    const ENCODING: Encoding = Encoding::Bytes;
    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(bytes.to_vec())
    }
}

impl Encode for [u8] {
    const ENCODING: Encoding = Encoding::Bytes;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self)
    }
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

impl Encode for Vec<u8> {
    const ENCODING: Encoding = Encoding::Bytes;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self)
    }
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

impl<'a> Decode<'a> for &'a str {
    const ENCODING: Encoding = Encoding::Utf8;
    #[inline]
    fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        std::str::from_utf8(bytes).map_err(|e| DecodeError {
            expected: "UTF-8 text",
            detail: e.to_string(),
        })
    }
    #[inline]
    fn try_decode(bytes: &'a [u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok()
    }
    #[inline]
    fn try_decode_in(bytes: &'a [u8], ascii: Option<Ascii<'a>>) -> Option<Self> {
        match ascii.and_then(|a| a.text(bytes)) {
            Some(text) => Some(text),
            None => Self::try_decode(bytes),
        }
    }
}

impl<'a> Decode<'a> for String {
    const ENCODING: Encoding = Encoding::Utf8;
    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        <&str>::decode(bytes).map(str::to_owned)
    }
    #[inline]
    fn try_decode_in(bytes: &'a [u8], ascii: Option<Ascii<'a>>) -> Option<Self> {
        <&str>::try_decode_in(bytes, ascii).map(str::to_owned)
    }
}

impl Encode for str {
    const ENCODING: Encoding = Encoding::Utf8;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes())
    }
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.as_bytes())
    }
}

impl Encode for String {
    const ENCODING: Encoding = Encoding::Utf8;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes())
    }
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.as_bytes())
    }
}

macro_rules! le_numbers {
    ($($t:ty => $enc:ident, $what:literal;)*) => {$(
        impl Decode<'_> for $t {
            const ENCODING: Encoding = Encoding::$enc;
            #[inline]
            fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                match bytes.try_into() {
                    Ok(a) => Ok(<$t>::from_le_bytes(a)),
                    Err(_) => Err(DecodeError {
                        expected: $what,
                        detail: format!("got {} bytes", bytes.len()),
                    }),
                }
            }
            #[inline]
            fn try_decode(bytes: &[u8]) -> Option<Self> {
                bytes.try_into().ok().map(<$t>::from_le_bytes)
            }
        }
        impl Encode for $t {
            const ENCODING: Encoding = Encoding::$enc;
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes())
            }
            #[inline(always)]
            fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                f(&self.to_le_bytes())
            }
        }
    )*};
}

le_numbers! {
    u8 => U8, "u8 (1 byte)";
    u16 => U16, "u16 (2 bytes)";
    u32 => U32, "u32 (4 bytes)";
    u64 => U64, "u64 (8 bytes)";
    i8 => I8, "i8 (1 byte)";
    i16 => I16, "i16 (2 bytes)";
    i32 => I32, "i32 (4 bytes)";
    i64 => I64, "i64 (8 bytes)";
    f32 => F32, "f32 (4 bytes)";
    f64 => F64, "f64 (8 bytes)";
}

impl Decode<'_> for bool {
    const ENCODING: Encoding = Encoding::Boolean;
    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(DecodeError {
                expected: "bool (one byte, 0 or 1)",
                detail: format!("got {bytes:?}"),
            }),
        }
    }
}

impl Encode for bool {
    const ENCODING: Encoding = Encoding::Boolean;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self))
    }
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&[u8::from(*self)])
    }
}

impl Decode<'_> for () {
    const ENCODING: Encoding = Encoding::None;
    #[inline]
    fn decode(_: &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

impl Encode for () {
    const ENCODING: Encoding = Encoding::None;
    #[inline]
    fn encode(&self, _: &mut Vec<u8>) {}
    #[inline(always)]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&[])
    }
}

/// Any serde type, encoded with postcard.
///
/// ```
/// use dstream_sdk::{Decode, Encode, Postcard};
///
/// let mut bytes = Vec::new();
/// Postcard(("page".to_string(), 3u64)).encode(&mut bytes);
/// let Postcard((name, n)) = Postcard::<(String, u64)>::decode(&bytes).unwrap();
/// assert_eq!((name.as_str(), n), ("page", 3));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Postcard<T>(pub T);

impl<'a, T: serde::Deserialize<'a>> Decode<'a> for Postcard<T> {
    const ENCODING: Encoding = Encoding::Postcard;
    #[inline]
    fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        postcard::from_bytes(bytes)
            .map(Postcard)
            .map_err(|e| DecodeError {
                expected: "a postcard value",
                detail: e.to_string(),
            })
    }
}

impl<T: serde::Serialize> Encode for Postcard<T> {
    const ENCODING: Encoding = Encoding::Postcard;
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        // Serialising into a Vec cannot fail for serde types that postcard
        // supports; a type it cannot encode (e.g. a map with a non-sized
        // iterator) is a programming error surfaced loudly.
        let bytes = postcard::to_allocvec(&self.0).expect("postcard encodes the value");
        out.extend_from_slice(&bytes)
    }
}

/// A record an operator returns: a value alone (the key stays empty) or a
/// `(key, value)` pair.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a record returned by a dstream operator",
    label = "not a value or (key, value) pair dstream can encode",
    note = "a record is a value or a (key, value) pair of: &str, String, &[u8], Vec<u8>, u8..u64, i8..i64, f32, f64, bool, (), or Postcard<T> for any serde type"
)]
pub trait Emit {
    /// Encoding of the key written.
    const KEY: Encoding;
    /// Encoding of the value written.
    const VALUE: Encoding;
    /// Appends this record to `out`.
    fn emit(self, out: &mut crate::Batch);
    /// Writes this record to `out`: a batch, or a [`Sink`](crate::Sink)
    /// such as the reduce a pipeline feeds. The default goes through
    /// [`Emit::emit`] and a new batch.
    #[doc(hidden)]
    #[inline]
    fn emit_to<O: Out + ?Sized>(self, out: &mut O) -> Result<(), OpError>
    where
        Self: Sized,
    {
        let mut b = crate::Batch::new();
        self.emit(&mut b);
        for (k, v) in b.records().iter() {
            out.record(k, v)?;
        }
        Ok(())
    }
}

/// Where the code the attributes generate writes records: a [`Batch`], or a
/// [`Sink`] that takes each record's bytes where they are (no copy).
#[doc(hidden)]
pub trait Out {
    /// Writes one record.
    fn record<K: Encode + ?Sized, V: Encode + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), OpError>;
}

impl Out for Batch {
    #[inline]
    fn record<K: Encode + ?Sized, V: Encode + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), OpError> {
        self.push_encoded(key, value);
        Ok(())
    }
}

impl Out for dyn Sink + '_ {
    #[inline]
    fn record<K: Encode + ?Sized, V: Encode + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), OpError> {
        key.with_bytes(|k| value.with_bytes(|v| self.push(k, v)))
            .map_err(|Refused| refused())
    }
}

/// The error of a stage whose output a [`Sink`] refused (whoever runs the
/// stage asks the sink why).
#[cold]
#[inline(never)]
pub(crate) fn refused() -> OpError {
    OpError::new("the next stage refused a record")
}

impl<K: Encode, V: Encode> Emit for (K, V) {
    const KEY: Encoding = K::ENCODING;
    const VALUE: Encoding = V::ENCODING;
    #[inline]
    fn emit(self, out: &mut crate::Batch) {
        out.push_encoded(&self.0, &self.1)
    }
    #[inline]
    fn emit_to<O: Out + ?Sized>(self, out: &mut O) -> Result<(), OpError> {
        out.record(&self.0, &self.1)
    }
}

macro_rules! emit_value {
    ($($t:ty),*) => {$(
        impl Emit for $t {
            const KEY: Encoding = Encoding::None;
            const VALUE: Encoding = <$t as Encode>::ENCODING;
            #[inline]
            fn emit(self, out: &mut crate::Batch) {
                out.push_encoded(&(), &self)
            }
            #[inline]
            fn emit_to<O: Out + ?Sized>(self, out: &mut O) -> Result<(), OpError> {
                out.record(&(), &self)
            }
        }
    )*};
}

emit_value!(
    &str,
    String,
    &[u8],
    Vec<u8>,
    u8,
    u16,
    u32,
    u64,
    i8,
    i16,
    i32,
    i64,
    f32,
    f64,
    bool,
    ()
);

impl<T: serde::Serialize> Emit for Postcard<T> {
    const KEY: Encoding = Encoding::None;
    const VALUE: Encoding = Encoding::Postcard;
    #[inline]
    fn emit(self, out: &mut crate::Batch) {
        out.push_encoded(&(), &self)
    }
    #[inline]
    fn emit_to<O: Out + ?Sized>(self, out: &mut O) -> Result<(), OpError> {
        out.record(&(), &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_little_endian_and_length_checked() {
        let mut b = Vec::new();
        258u16.encode(&mut b);
        assert_eq!(b, [2, 1]);
        assert_eq!(u16::decode(&b), Ok(258));
        let e = u64::decode(&b).unwrap_err();
        assert_eq!(e.to_string(), "expected u64 (8 bytes): got 2 bytes");
        assert!(<&str>::decode(&[0xff]).is_err());
        assert!(bool::decode(&[2]).is_err());
    }

    #[test]
    fn ascii_is_found_in_any_block_and_only_vouches_for_its_own_bytes() {
        let text = vec![b'a'; 3000];
        assert!(Ascii::check(&text).is_some());
        assert!(Ascii::check(&[]).is_some());
        for at in [0, 1, 63, 64, 1023, 2047, 2943, 2944, 2999] {
            let mut t = text.clone();
            t[at] = 0x80;
            assert!(Ascii::check(&t).is_none(), "byte {at}");
        }
        let all = "abc déf ghi".as_bytes();
        let ascii = Ascii::check(&all[..4]).expect("ascii");
        assert_eq!(ascii.text(&all[..3]), Some("abc"));
        assert_eq!(ascii.text(&all[1..4]), Some("bc "));
        // Not within the checked bytes: no answer, the caller checks itself.
        assert_eq!(ascii.text(&all[2..6]), None);
        assert_eq!(ascii.text(b"abc"), None);
        assert_eq!(<&str>::try_decode_in(&all[4..7], Some(ascii)), Some("dé"));
        assert_eq!(<&str>::try_decode_in(&all[4..6], Some(ascii)), None);
    }
}
