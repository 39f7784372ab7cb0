//! JSON ↔ protobuf for one message, driven by the generated schema: fields are matched by
//! JSON name one way and by tag the other; the types whose JSON is not an object of their
//! fields (times, quantities, int-or-string, raw JSON, the CRD schema unions) are done by hand.
//!
//! Encoding drops what the schema lacks: a JSON field with no proto field (and `apiVersion`/
//! `kind`, which travel in the envelope) is not written, as kube-apiserver, decoding into its Go
//! types, would never have kept it. Decoding leaves out empty strings and zero times, the Go
//! zero values the JSON form omits (a gogo-protobuf marshaller writes every non-pointer field).

use base64::Engine;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use serde_json::{Map, Number, Value};

use super::schema::{Field, Message, Special, Ty, MESSAGES};

pub type Result<T> = std::result::Result<T, String>;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

// ---------------------------------------------------------------------------------------
// JSON → protobuf
// ---------------------------------------------------------------------------------------

/// Append `v` encoded as message `m` (its fields only, no length prefix) to `out`.
pub fn encode(m: &'static Message, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match m.special {
        Special::None => {
            let Value::Object(obj) = v else {
                return Err(format!("{}: expected an object, got {v}", short(m)));
            };
            for f in m.fields.iter().filter(|f| f.inline) {
                if let Ty::Message(i) = f.ty {
                    let mut inner = Vec::new();
                    encode(&MESSAGES[i as usize], v, &mut inner)?;
                    put_bytes(f.tag, &inner, out);
                }
            }
            for (k, val) in obj {
                if val.is_null() {
                    continue;
                }
                // Fields the schema lacks are dropped (see the module doc); an inline
                // struct's fields were written above.
                let Some(f) = m.fields.iter().find(|f| f.json == k && !f.inline) else {
                    continue;
                };
                encode_field(f, val, out).map_err(|e| format!("{k}: {e}"))?;
            }
            Ok(())
        }
        Special::Time | Special::MicroTime => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a time string, got {v}"))?;
            let (secs, nanos) =
                super::time::parse(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 time"))?;
            put_varint(1, secs as u64, out);
            if nanos != 0 {
                put_varint(2, nanos as u64, out);
            }
            Ok(())
        }
        Special::Duration => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a duration, got {v}"))?;
            let ns =
                super::time::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration"))?;
            put_varint(1, ns as u64, out);
            Ok(())
        }
        Special::RawJson => {
            let raw = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            put_bytes(1, &raw, out);
            Ok(())
        }
        Special::Quantity => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(format!("expected a quantity, got {v}")),
            };
            put_bytes(1, s.as_bytes(), out);
            Ok(())
        }
        Special::IntOrString => {
            match v {
                Value::Number(n) => {
                    put_varint(1, 0, out);
                    put_varint(2, n.as_i64().unwrap_or(0) as u64, out);
                }
                Value::String(s) => {
                    put_varint(1, 1, out);
                    put_bytes(3, s.as_bytes(), out);
                }
                _ => return Err(format!("expected an integer or a string, got {v}")),
            }
            Ok(())
        }
        Special::Array => {
            let items = v
                .as_array()
                .ok_or_else(|| format!("expected a list, got {v}"))?;
            for i in items {
                let s = i
                    .as_str()
                    .ok_or_else(|| format!("expected a string, got {i}"))?;
                put_bytes(1, s.as_bytes(), out);
            }
            Ok(())
        }
        // `items` of a JSONSchemaProps: one schema (field 1) or a list of them (field 2).
        Special::PropsOrArray => match v {
            Value::Array(items) => {
                let f = field(m, 2)?;
                items.iter().try_for_each(|i| encode_single(f, i, out))
            }
            _ => encode_single(field(m, 1)?, v, out),
        },
        // `additionalProperties`: a bool (allows, field 1) or a schema (field 2, allows true).
        Special::PropsOrBool => {
            match v {
                Value::Bool(b) => put_varint(1, *b as u64, out),
                _ => {
                    put_varint(1, 1, out);
                    encode_single(field(m, 2)?, v, out)?;
                }
            }
            Ok(())
        }
        // `dependencies` values: a schema (field 1) or a list of property names (field 2).
        Special::PropsOrStringArray => match v {
            Value::Array(items) => {
                let f = field(m, 2)?;
                items.iter().try_for_each(|i| encode_single(f, i, out))
            }
            _ => encode_single(field(m, 1)?, v, out),
        },
    }
}

fn field(m: &'static Message, tag: u32) -> Result<&'static Field> {
    m.fields
        .iter()
        .find(|f| f.tag == tag)
        .ok_or_else(|| format!("{} has no field {tag}", short(m)))
}

fn short(m: &Message) -> &str {
    m.name.rsplit("::").next().unwrap_or(m.name)
}

pub(super) fn encode_field(f: &Field, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match f.ty {
        Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => {
            let obj = v
                .as_object()
                .ok_or_else(|| format!("expected a map, got {v}"))?;
            for (k, val) in obj {
                let mut entry = Vec::new();
                put_bytes(1, k.as_bytes(), &mut entry);
                match f.ty {
                    Ty::MapString => {
                        let s = val
                            .as_str()
                            .ok_or_else(|| format!("{k}: expected a string"))?;
                        put_bytes(2, s.as_bytes(), &mut entry);
                    }
                    Ty::MapBytes => {
                        let s = val
                            .as_str()
                            .ok_or_else(|| format!("{k}: expected base64"))?;
                        let raw = b64()
                            .decode(s)
                            .map_err(|e| format!("{k}: not base64: {e}"))?;
                        put_bytes(2, &raw, &mut entry);
                    }
                    Ty::MapMessage(i) => {
                        let mut inner = Vec::new();
                        encode(&MESSAGES[i as usize], val, &mut inner)
                            .map_err(|e| format!("{k}: {e}"))?;
                        put_bytes(2, &inner, &mut entry);
                    }
                    _ => unreachable!(),
                }
                put_bytes(f.tag, &entry, out);
            }
            Ok(())
        }
        _ if f.repeated => {
            let items = v
                .as_array()
                .ok_or_else(|| format!("expected a list, got {v}"))?;
            items.iter().try_for_each(|i| encode_single(f, i, out))
        }
        _ => encode_single(f, v, out),
    }
}

pub(super) fn encode_single(f: &Field, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    let int = || {
        v.as_i64()
            .or_else(|| v.as_f64().filter(|x| x.fract() == 0.0).map(|x| x as i64))
            .ok_or_else(|| format!("expected an integer, got {v}"))
    };
    match f.ty {
        Ty::String => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected a string, got {v}"))?;
            put_bytes(f.tag, s.as_bytes(), out);
        }
        Ty::Int32 => put_varint(f.tag, (int()? as i32) as i64 as u64, out),
        Ty::Int64 => put_varint(f.tag, int()? as u64, out),
        Ty::Bool => {
            let b = v
                .as_bool()
                .ok_or_else(|| format!("expected a bool, got {v}"))?;
            put_varint(f.tag, b as u64, out);
        }
        Ty::Double => {
            let x = v
                .as_f64()
                .ok_or_else(|| format!("expected a number, got {v}"))?;
            encode_key(f.tag, WireType::SixtyFourBit, out);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        Ty::Bytes => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("expected base64, got {v}"))?;
            let raw = b64().decode(s).map_err(|e| format!("not base64: {e}"))?;
            put_bytes(f.tag, &raw, out);
        }
        Ty::Message(i) => {
            let mut inner = Vec::new();
            encode(&MESSAGES[i as usize], v, &mut inner)?;
            put_bytes(f.tag, &inner, out);
        }
        Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => return encode_field(f, v, out),
    }
    Ok(())
}

pub fn put_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

pub fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

// ---------------------------------------------------------------------------------------
// protobuf → JSON
// ---------------------------------------------------------------------------------------

/// One field as read off the wire.
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Skipped: no k8s message has a fixed32 field.
    Fixed32,
    Bytes(&'a [u8]),
}

/// Read the fields of one message: (tag, value) in wire order.
pub fn fields(mut buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        let w = match wt {
            WireType::Varint => Wire::Varint(decode_varint(&mut buf).map_err(|e| e.to_string())?),
            WireType::SixtyFourBit => {
                let (h, t) = buf.split_at_checked(8).ok_or("truncated fixed64")?;
                buf = t;
                Wire::Fixed64(u64::from_le_bytes(h.try_into().unwrap_or_default()))
            }
            WireType::ThirtyTwoBit => {
                let (h, t) = buf.split_at_checked(4).ok_or("truncated fixed32")?;
                buf = t;
                let _ = h;
                Wire::Fixed32
            }
            WireType::LengthDelimited => {
                let n = decode_varint(&mut buf).map_err(|e| e.to_string())? as usize;
                let (h, t) = buf.split_at_checked(n).ok_or("truncated field")?;
                buf = t;
                Wire::Bytes(h)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err("groups are not supported".into())
            }
        };
        out.push((tag, w));
    }
    Ok(out)
}

fn varint_of(w: &Wire) -> Result<u64> {
    match w {
        Wire::Varint(v) => Ok(*v),
        _ => Err("expected a varint".into()),
    }
}

fn bytes_of<'a>(w: &Wire<'a>) -> Result<&'a [u8]> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err("expected a length-delimited field".into()),
    }
}

fn string_of(w: &Wire) -> Result<String> {
    String::from_utf8(bytes_of(w)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
}

/// How deep messages may nest in a decoded body: JSON's own parser stops at 128 levels, and a
/// recursive message (JSONSchemaProps) must not let a small body exhaust the stack.
const MAX_DEPTH: usize = 100;

/// Decode message `m`; `Value::Null` is a zero value its JSON form leaves out.
pub fn decode(m: &'static Message, buf: &[u8]) -> Result<Value> {
    decode_at(m, buf, 0)
}

fn decode_at(m: &'static Message, buf: &[u8], depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nested more than {MAX_DEPTH} deep"));
    }
    let fs = fields(buf)?;
    let get = |tag: u32| fs.iter().rev().find(|(t, _)| *t == tag).map(|(_, w)| w);
    let all = |tag: u32| fs.iter().filter(move |(t, _)| *t == tag).map(|(_, w)| w);
    match m.special {
        Special::None => {
            let mut obj = Map::new();
            for (tag, w) in &fs {
                let Some(f) = m.fields.iter().find(|f| f.tag == *tag) else {
                    continue;
                };
                if let (true, Ty::Message(i)) = (f.inline, f.ty) {
                    let inner = decode_at(&MESSAGES[i as usize], bytes_of(w)?, depth + 1)?;
                    if let Value::Object(inner) = inner {
                        obj.extend(inner);
                    }
                    continue;
                }
                decode_field(f, w, &mut obj, depth).map_err(|e| format!("{}: {e}", f.json))?;
            }
            Ok(Value::Object(obj))
        }
        Special::Time | Special::MicroTime => {
            let secs = get(1).map(varint_of).transpose()?.unwrap_or(0) as i64;
            let nanos = get(2).map(varint_of).transpose()?.unwrap_or(0) as i32;
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let micro = m.special == Special::MicroTime;
            Ok(Value::String(super::time::format(secs, nanos, micro)))
        }
        Special::Duration => {
            let ns = get(1).map(varint_of).transpose()?.unwrap_or(0) as i64;
            Ok(Value::String(super::time::format_duration(ns)))
        }
        Special::RawJson => match get(1).map(bytes_of).transpose()? {
            Some(raw) if !raw.is_empty() => {
                serde_json::from_slice(raw).map_err(|e| format!("raw JSON: {e}"))
            }
            _ => Ok(Value::Null),
        },
        Special::Quantity => Ok(get(1)
            .map(string_of)
            .transpose()?
            .map_or(Value::Null, Value::String)),
        Special::IntOrString => {
            let ty = get(1).map(varint_of).transpose()?.unwrap_or(0);
            if ty == 1 {
                Ok(Value::String(
                    get(3).map(string_of).transpose()?.unwrap_or_default(),
                ))
            } else {
                let i = get(2).map(varint_of).transpose()?.unwrap_or(0) as i32;
                Ok(Value::Number(i.into()))
            }
        }
        Special::Array => Ok(Value::Array(
            all(1)
                .map(|w| string_of(w).map(Value::String))
                .collect::<Result<_>>()?,
        )),
        Special::PropsOrArray | Special::PropsOrStringArray => {
            let list: Vec<_> = all(2).collect();
            if !list.is_empty() {
                let f = field(m, 2)?;
                let mut obj = Map::new();
                for w in list {
                    decode_field(f, w, &mut obj, depth)?;
                }
                return Ok(obj.remove(f.json).unwrap_or(Value::Array(vec![])));
            }
            one_schema(m, 1, get(1), depth)
        }
        Special::PropsOrBool => match get(2) {
            Some(w) => one_schema(m, 2, Some(w), depth),
            None => Ok(Value::Bool(
                get(1).map(varint_of).transpose()?.unwrap_or(0) != 0,
            )),
        },
    }
}

fn one_schema(m: &'static Message, tag: u32, w: Option<&Wire>, depth: usize) -> Result<Value> {
    let f = field(m, tag)?;
    match (f.ty, w) {
        (Ty::Message(i), Some(w)) => decode_at(&MESSAGES[i as usize], bytes_of(w)?, depth + 1),
        _ => Ok(Value::Null),
    }
}

/// Decode one occurrence of field `f` into `obj` (appending to a list, adding to a map).
fn decode_field(f: &Field, w: &Wire, obj: &mut Map<String, Value>, depth: usize) -> Result<()> {
    if let Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) = f.ty {
        let entry = fields(bytes_of(w)?)?;
        let mut key = String::new();
        let mut val = Value::Null;
        for (tag, ew) in &entry {
            match tag {
                1 => key = string_of(ew)?,
                2 => {
                    val = match f.ty {
                        Ty::MapString => Value::String(string_of(ew)?),
                        Ty::MapBytes => Value::String(b64().encode(bytes_of(ew)?)),
                        Ty::MapMessage(i) => {
                            decode_at(&MESSAGES[i as usize], bytes_of(ew)?, depth + 1)?
                        }
                        _ => unreachable!(),
                    }
                }
                _ => {}
            }
        }
        if val.is_null() {
            val = match f.ty {
                Ty::MapString => Value::String(String::new()),
                Ty::MapBytes => Value::String(String::new()),
                _ => Value::Object(Map::new()),
            };
        }
        let map = obj
            .entry(f.json)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = map {
            m.insert(key, val);
        }
        return Ok(());
    }
    // A packed list of numbers (proto3 style; the k8s messages are unpacked, but a decoder
    // accepts both).
    if f.repeated && matches!(f.ty, Ty::Int32 | Ty::Int64) {
        if let Wire::Bytes(mut b) = w {
            let list = obj.entry(f.json).or_insert_with(|| Value::Array(vec![]));
            while !b.is_empty() {
                let v = decode_varint(&mut b).map_err(|e| e.to_string())?;
                if let Value::Array(a) = list {
                    a.push(int_value(f.ty, v));
                }
            }
            return Ok(());
        }
    }
    let v = match f.ty {
        Ty::String => Value::String(string_of(w)?),
        Ty::Int32 | Ty::Int64 => int_value(f.ty, varint_of(w)?),
        Ty::Bool => Value::Bool(varint_of(w)? != 0),
        Ty::Double => match w {
            Wire::Fixed64(b) => {
                Number::from_f64(f64::from_bits(*b)).map_or(Value::Null, Value::Number)
            }
            _ => return Err("expected a double".into()),
        },
        Ty::Bytes => Value::String(b64().encode(bytes_of(w)?)),
        Ty::Message(i) => decode_at(&MESSAGES[i as usize], bytes_of(w)?, depth + 1)?,
        Ty::MapString | Ty::MapBytes | Ty::MapMessage(_) => unreachable!(),
    };
    if f.repeated {
        let list = obj.entry(f.json).or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(a) = list {
            a.push(v);
        }
        return Ok(());
    }
    // Go's zero values that its JSON leaves out: an empty string or byte slice, a zero time.
    let omitted = match (&v, f.ty) {
        (Value::Null, _) => true,
        (Value::String(s), Ty::String | Ty::Bytes) => s.is_empty(),
        _ => false,
    };
    if omitted {
        obj.remove(f.json);
    } else {
        obj.insert(f.json.to_string(), v);
    }
    Ok(())
}

fn int_value(ty: Ty, v: u64) -> Value {
    match ty {
        Ty::Int32 => Value::Number((v as i32).into()),
        _ => Value::Number((v as i64).into()),
    }
}
