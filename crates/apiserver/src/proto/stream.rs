//! Stored JSON text → protobuf without building a JSON tree first: serde's deserializer walks
//! the text and the schema together and writes fields as it meets them. This is the get and
//! list path (the store keeps JSON), where a tree of every object was most of the cost.
//!
//! The hand-done types (times, quantities, int-or-string, raw JSON, the CRD unions) and
//! messages with inline structs are small subtrees: those go through a `Value` and
//! [`super::transcode::encode`], so there is one definition of each special form.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::schema::{Field, Message, Special, Ty, MESSAGES};
use super::transcode::{encode_field, put_bytes, put_varint};

/// Encode stored JSON `text` as message `m`; `resource_version` is added to its `metadata`
/// (the store keeps it as the key's revision, not in the text).
pub fn encode_stored(
    m: &'static Message,
    text: &[u8],
    resource_version: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    MsgSeed {
        m,
        out,
        rv: resource_version,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// A special form whose JSON is one string or number: encoded from that scalar directly.
fn scalar_special(m: &Message) -> bool {
    matches!(
        m.special,
        Special::Time | Special::MicroTime | Special::Quantity | Special::IntOrString
    )
}

impl FieldSeed<'_> {
    /// A string or number for a message field of a scalar special type (a time, a quantity).
    fn special_scalar<E: de::Error>(self, v: Value) -> Result<(), E> {
        let i = match self.f.ty {
            Ty::Message(i) | Ty::MapMessage(i) if scalar_special(&MESSAGES[i as usize]) => i,
            _ => return Err(E::custom(format!("{}: unexpected {v}", self.f.json))),
        };
        let m = &MESSAGES[i as usize];
        nested(self.f.tag, self.out, |out| {
            super::transcode::encode(m, &v, out).map_err(E::custom)
        })
    }
}

/// Through a `Value`: the special forms, and messages with inline structs.
fn slow(m: &Message) -> bool {
    m.special != Special::None || m.fields.iter().any(|f| f.inline)
}

struct MsgSeed<'a> {
    m: &'static Message,
    out: &'a mut Vec<u8>,
    rv: Option<&'a str>,
}

impl<'de> DeserializeSeed<'de> for MsgSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if slow(self.m) {
            let v = Value::deserialize(d)?;
            return super::transcode::encode(self.m, &v, self.out).map_err(de::Error::custom);
        }
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MsgSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            // Fields the schema lacks are dropped, as in `transcode::encode`.
            match self.m.fields.iter().find(|f| f.json == key) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(f) => {
                    let rv = if key == "metadata" { self.rv } else { None };
                    map.next_value_seed(FieldSeed {
                        f,
                        out: self.out,
                        rv,
                        element: false,
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// One field's value (`element`: one item of a repeated field).
struct FieldSeed<'a> {
    f: &'static Field,
    out: &'a mut Vec<u8>,
    rv: Option<&'a str>,
    element: bool,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let target_slow = match self.f.ty {
            Ty::Message(i) | Ty::MapMessage(i) => {
                let m = &MESSAGES[i as usize];
                slow(m) && !scalar_special(m)
            }
            _ => false,
        };
        if target_slow {
            let v = Value::deserialize(d)?;
            if v.is_null() {
                return Ok(());
            }
            let r = if self.element {
                super::transcode::encode_single(self.f, &v, self.out)
            } else {
                encode_field(self.f, &v, self.out)
            };
            return r.map_err(de::Error::custom);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a value for {}", self.f.json)
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match self.f.ty {
            Ty::String => put_bytes(self.f.tag, s.as_bytes(), self.out),
            Ty::Bytes => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| E::custom(format!("{}: not base64: {e}", self.f.json)))?;
                put_bytes(self.f.tag, &raw, self.out);
            }
            _ => return self.special_scalar(Value::String(s.to_string())),
        }
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        match self.f.ty {
            Ty::Int32 => put_varint(self.f.tag, (v as i32) as i64 as u64, self.out),
            Ty::Int64 => put_varint(self.f.tag, v as u64, self.out),
            Ty::Double => self.visit_f64(v as f64)?,
            _ => return self.special_scalar(Value::Number(v.into())),
        }
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_i64(v as i64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.f.ty {
            Ty::Double => {
                prost::encoding::encode_key(
                    self.f.tag,
                    prost::encoding::WireType::SixtyFourBit,
                    self.out,
                );
                self.out.extend_from_slice(&v.to_bits().to_le_bytes());
                Ok(())
            }
            Ty::Int32 | Ty::Int64 if v.fract() == 0.0 => self.visit_i64(v as i64),
            _ => Err(E::custom(format!("{}: unexpected number", self.f.json))),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.f.ty {
            Ty::Bool => {
                put_varint(self.f.tag, v as u64, self.out);
                Ok(())
            }
            _ => Err(E::custom(format!("{}: unexpected bool", self.f.json))),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.f.repeated || self.element {
            return Err(de::Error::custom(format!(
                "{}: unexpected list",
                self.f.json
            )));
        }
        while seq
            .next_element_seed(FieldSeed {
                f: self.f,
                out: self.out,
                rv: None,
                element: true,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match self.f.ty {
            Ty::Message(i) => {
                let m = &MESSAGES[i as usize];
                let rv = self.rv;
                nested(self.f.tag, self.out, |out| {
                    MsgSeed { m, out, rv: None }.visit_map(map)?;
                    if let (Some(rv), Some(f)) =
                        (rv, m.fields.iter().find(|f| f.json == "resourceVersion"))
                    {
                        put_bytes(f.tag, rv.as_bytes(), out);
                    }
                    Ok(())
                })?;
            }
            Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => {
                let value_field = match self.f.ty {
                    Ty::MapString => &MAP_STRING,
                    Ty::MapBytes => &MAP_BYTES,
                    Ty::MapMessage(i) => map_message(i),
                    _ => unreachable!(),
                };
                while let Some(Key(k)) = map.next_key()? {
                    nested(self.f.tag, self.out, |entry| {
                        put_bytes(1, k.as_bytes(), entry);
                        map.next_value_seed(FieldSeed {
                            f: value_field,
                            out: entry,
                            rv: None,
                            element: true,
                        })
                    })?;
                }
            }
            _ => {
                return Err(de::Error::custom(format!(
                    "{}: unexpected object",
                    self.f.json
                )))
            }
        }
        Ok(())
    }
}

/// Write field `tag` as a length-delimited message that `body` appends to `out` in place: a
/// one-byte length is reserved and widened afterwards if the message is 128 bytes or more, so
/// no message is built in a buffer of its own and copied into its parent.
fn nested<E>(
    tag: u32,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    let at = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        prost::encoding::encode_varint(len as u64, &mut prefix);
        out.splice(at..at + 1, prefix);
    }
    Ok(())
}

/// The value field (tag 2) of a map entry.
static MAP_STRING: Field = Field {
    json: "value",
    tag: 2,
    ty: Ty::String,
    repeated: false,
    inline: false,
};
static MAP_BYTES: Field = Field {
    json: "value",
    tag: 2,
    ty: Ty::Bytes,
    repeated: false,
    inline: false,
};

fn map_message(i: u16) -> &'static Field {
    use std::sync::OnceLock;
    // The value field of a map entry whose value is message i, for every message: built once.
    static FIELDS: OnceLock<Vec<Field>> = OnceLock::new();
    let fields = FIELDS.get_or_init(|| {
        (0..MESSAGES.len())
            .map(|i| Field {
                json: "value",
                tag: 2,
                ty: Ty::Message(i as u16),
                repeated: false,
                inline: false,
            })
            .collect()
    });
    &fields[i as usize]
}
