//! What a plugin says about itself: the host-side mirror of `describe`.

use std::fmt;

/// The kinds of operator (the WIT contract's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperatorKind {
    /// One record in, one record out.
    Map,
    /// One record in, zero or more out.
    FlatMap,
    /// Keep or drop each record.
    Filter,
    /// Combine the values of one key (associative, commutative).
    Reduce,
    /// Undo a reduce, for windows with an inverse function.
    Inverse,
    /// Key, new values, old state -> new state or none.
    UpdateState,
    /// Whole partition in, partition out.
    Transform,
}

impl OperatorKind {
    /// Name as written in WIT and job files (`flat-map`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::FlatMap => "flat-map",
            Self::Filter => "filter",
            Self::Reduce => "reduce",
            Self::Inverse => "inverse",
            Self::UpdateState => "update-state",
            Self::Transform => "transform",
        }
    }

    /// The kinds that take one partition in (and can be fused into a
    /// pipeline); inverse and update-state take two.
    pub const ONE_INPUT: [OperatorKind; 5] = [
        Self::Map,
        Self::FlatMap,
        Self::Filter,
        Self::Reduce,
        Self::Transform,
    ];

    /// Record by record (map, flat-map, filter): the output of a partition
    /// is the outputs of its parts one after the other.
    pub fn is_record_wise(self) -> bool {
        matches!(self, Self::Map | Self::FlatMap | Self::Filter)
    }
}

impl fmt::Display for OperatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a key or value is encoded (the WIT contract's `encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// No data, or ignored.
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

impl Encoding {
    /// Short name (`utf8`, `u64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bytes => "bytes",
            Self::Utf8 => "utf8",
            Self::U8 => "u8",
            Self::U16 => "u16",
            Self::U32 => "u32",
            Self::U64 => "u64",
            Self::I8 => "i8",
            Self::I16 => "i16",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Boolean => "bool",
            Self::Postcard => "postcard",
        }
    }

    /// Renders bytes of this encoding as text for people: numbers in
    /// decimal, UTF-8 as is, anything else (or bytes that do not fit) as
    /// `0x`-prefixed hex.
    pub fn render(self, bytes: &[u8]) -> String {
        fn hex(bytes: &[u8]) -> String {
            let mut s = String::from("0x");
            for b in bytes {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
        macro_rules! num {
            ($t:ty) => {
                match bytes.try_into() {
                    Ok(a) => <$t>::from_le_bytes(a).to_string(),
                    Err(_) => hex(bytes),
                }
            };
        }
        match self {
            Self::None if bytes.is_empty() => String::new(),
            Self::Utf8 | Self::Bytes | Self::None => match std::str::from_utf8(bytes) {
                Ok(s) if self == Self::Utf8 || !s.chars().any(char::is_control) => s.to_string(),
                _ => hex(bytes),
            },
            Self::U8 => num!(u8),
            Self::U16 => num!(u16),
            Self::U32 => num!(u32),
            Self::U64 => num!(u64),
            Self::I8 => num!(i8),
            Self::I16 => num!(i16),
            Self::I32 => num!(i32),
            Self::I64 => num!(i64),
            Self::F32 => num!(f32),
            Self::F64 => num!(f64),
            Self::Boolean => match bytes {
                [0] => "false".into(),
                [1] => "true".into(),
                _ => hex(bytes),
            },
            Self::Postcard => hex(bytes),
        }
    }

    /// Parses text into bytes of this encoding (the inverse of
    /// [`Encoding::render`] for numbers, text and booleans).
    pub fn parse(self, text: &str) -> Result<Vec<u8>, String> {
        macro_rules! num {
            ($t:ty) => {
                text.trim()
                    .parse::<$t>()
                    .map(|n| n.to_le_bytes().to_vec())
                    .map_err(|e| format!("{text:?} is not a {}: {e}", self.name()))
            };
        }
        match self {
            Self::None | Self::Bytes | Self::Utf8 => Ok(text.as_bytes().to_vec()),
            Self::U8 => num!(u8),
            Self::U16 => num!(u16),
            Self::U32 => num!(u32),
            Self::U64 => num!(u64),
            Self::I8 => num!(i8),
            Self::I16 => num!(i16),
            Self::I32 => num!(i32),
            Self::I64 => num!(i64),
            Self::F32 => num!(f32),
            Self::F64 => num!(f64),
            Self::Boolean => match text.trim() {
                "true" | "1" => Ok(vec![1]),
                "false" | "0" => Ok(vec![0]),
                _ => Err(format!("{text:?} is not a bool (true/false)")),
            },
            Self::Postcard => Err("postcard values cannot be typed in as text".into()),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter an operator takes from the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Name as written in the job.
    pub name: String,
    /// What it does.
    pub description: String,
    /// True when the job must give it.
    pub required: bool,
}

/// One operator of a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorInfo {
    /// Name (a job refers to it as `plugin/name`).
    pub name: String,
    /// Kind.
    pub kind: OperatorKind,
    /// What it does.
    pub description: String,
    /// Parameters it takes.
    pub params: Vec<ParamInfo>,
    /// Encodings of the input key and value (update-state: of new values).
    pub input: (Encoding, Encoding),
    /// Encodings of the output key and value (update-state: of the state).
    pub output: (Encoding, Encoding),
}

impl OperatorInfo {
    /// An operator's description with no text and no parameters (for jobs
    /// and tests built in code).
    pub fn new(
        name: &str,
        kind: OperatorKind,
        input: (Encoding, Encoding),
        output: (Encoding, Encoding),
    ) -> Self {
        Self {
            name: name.to_string(),
            kind,
            description: String::new(),
            params: Vec::new(),
            input,
            output,
        }
    }
}

/// What a plugin says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Its operators.
    pub operators: Vec<OperatorInfo>,
}

impl PluginInfo {
    /// The operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorInfo> {
        self.operators.iter().find(|o| o.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::Encoding;

    #[test]
    fn render_and_parse_round_trip() {
        for (enc, text) in [
            (Encoding::U64, "42"),
            (Encoding::I32, "-7"),
            (Encoding::Utf8, "héllo"),
            (Encoding::Boolean, "true"),
            (Encoding::F64, "1.5"),
        ] {
            assert_eq!(enc.render(&enc.parse(text).unwrap()), text);
        }
        assert_eq!(Encoding::U64.render(&[1, 2]), "0x0102");
        assert_eq!(Encoding::Postcard.render(&[3, 97]), "0x0361");
        assert!(Encoding::U8.parse("300").is_err());
    }
}
