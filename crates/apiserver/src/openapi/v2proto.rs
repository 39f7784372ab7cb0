//! `/openapi/v2` as protobuf: the `openapi.v2.Document` message of gnostic (the form kubectl
//! ≤1.26 downloads to explain kinds, validate manifests client-side and find patch
//! strategies). Only the parts of the message a schema document uses are declared here, with
//! gnostic's field numbers; vendor extensions travel as YAML text, as gnostic encodes them.

use prost::Message;
use serde_json::{Map, Value};

#[derive(Clone, PartialEq, Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Paths {}

#[derive(Clone, PartialEq, Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub reference: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, optional, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AdditionalPropertiesItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

fn text(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// One JSON schema (in v2 form: `$ref` under `#/definitions/`) as a gnostic Schema.
fn schema(v: &Value) -> Schema {
    let named = |m: &Map<String, Value>| -> Vec<NamedSchema> {
        m.iter()
            .map(|(k, s)| NamedSchema {
                name: k.clone(),
                value: Some(schema(s)),
            })
            .collect()
    };
    let types = match v.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Schema {
        reference: text(v, "$ref"),
        format: text(v, "format"),
        description: text(v, "description"),
        required: v
            .get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        additional_properties: v
            .get("additionalProperties")
            .filter(|a| a.is_object())
            .map(|a| {
                Box::new(AdditionalPropertiesItem {
                    schema: Some(schema(a)),
                })
            }),
        r#type: (!types.is_empty()).then_some(TypeItem { value: types }),
        items: v.get("items").map(|i| ItemsItem {
            schema: vec![schema(i)],
        }),
        properties: v
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| Properties {
                additional_properties: named(p),
            }),
        vendor_extension: v
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.starts_with("x-"))
                    .map(|(k, x)| NamedAny {
                        name: k.clone(),
                        value: Some(Any {
                            yaml: serde_yaml::to_string(x).unwrap_or_default(),
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Encode a v2 JSON document's definitions as a gnostic Document.
pub fn encode(doc: &Value) -> Vec<u8> {
    let definitions = doc
        .get("definitions")
        .and_then(Value::as_object)
        .map(|d| Definitions {
            additional_properties: d
                .iter()
                .map(|(k, s)| NamedSchema {
                    name: k.clone(),
                    value: Some(schema(s)),
                })
                .collect(),
        });
    Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: text(&doc["info"], "title"),
            version: text(&doc["info"], "version"),
        }),
        paths: Some(Paths {}),
        definitions,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_round_trip_through_the_wire_format() {
        let doc = json!({"info": {"title": "Kubernetes", "version": "v1.33.0"}, "definitions": {
            "a.B": {"type": "object", "description": "d", "required": ["x"],
                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "B", "version": "v1"}],
                    "properties": {"x": {"type": "array", "items": {"$ref": "#/definitions/a.C"}},
                                   "m": {"type": "object", "additionalProperties": {"type": "string"}}}}}});
        let bytes = encode(&doc);
        let back = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.swagger, "2.0");
        let b = back.definitions.unwrap().additional_properties[0].clone();
        assert_eq!(b.name, "a.B");
        let s = b.value.unwrap();
        assert_eq!(s.required, ["x"]);
        assert_eq!(
            s.vendor_extension[0].name,
            "x-kubernetes-group-version-kind"
        );
        assert!(s.vendor_extension[0]
            .value
            .as_ref()
            .unwrap()
            .yaml
            .contains("kind: B"));
        let props = s.properties.unwrap().additional_properties;
        let x = props
            .iter()
            .find(|p| p.name == "x")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert_eq!(x.items.unwrap().schema[0].reference, "#/definitions/a.C");
    }
}
