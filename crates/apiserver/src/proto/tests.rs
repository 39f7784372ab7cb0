//! Round trips of every built-in kind yun serves: JSON → protobuf → JSON gives the same object,
//! for a sample with every field of the kind's schema set (checked against the k8s-openapi type,
//! so the JSON names are the real ones) and for hand-written objects with the special types.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::schema::{self, Message, Special, Ty, MESSAGES};
use super::*;

/// A value for every field of `m`, to `depth` levels of nesting.
fn sample(m: &Message, depth: usize) -> Value {
    match m.special {
        Special::Time => json!("2024-05-01T10:00:00Z"),
        Special::MicroTime => json!("2024-05-01T10:00:00.123456Z"),
        Special::Duration => json!("1m30s"),
        Special::RawJson => json!({"a": [1, "b"]}),
        Special::Quantity => json!("250m"),
        Special::IntOrString => json!("http"),
        Special::Array => json!(["x", "y"]),
        Special::PropsOrArray => json!([{"type": "string"}, {"type": "integer"}]),
        Special::PropsOrStringArray => json!(["a"]),
        Special::PropsOrBool => json!(true),
        Special::None => {
            let mut o = Map::new();
            for f in m.fields {
                if let (true, Ty::Message(i)) = (f.inline, f.ty) {
                    if let Value::Object(inner) = sample(&MESSAGES[i as usize], depth) {
                        o.extend(inner);
                    }
                    continue;
                }
                let one = match f.ty {
                    Ty::String => json!(format!("s-{}", f.json)),
                    Ty::Int32 => json!(7),
                    Ty::Int64 => json!(9),
                    Ty::Bool => json!(true),
                    Ty::Double => json!(1.5),
                    Ty::Bytes => json!("Ynl0ZXM="),
                    Ty::Message(i) if depth > 0 => sample(&MESSAGES[i as usize], depth - 1),
                    Ty::Message(_) => continue,
                    Ty::MapString => json!({"k": "v"}),
                    Ty::MapBytes => json!({"k": "Ynl0ZXM="}),
                    Ty::MapMessage(i) if depth > 0 => {
                        json!({"k": sample(&MESSAGES[i as usize], depth - 1)})
                    }
                    Ty::MapMessage(_) => continue,
                };
                let v = if f.repeated { json!([one]) } else { one };
                o.insert(f.json.to_string(), v);
            }
            Value::Object(o)
        }
    }
}

fn round_trip(v: &Value) -> Value {
    let bytes = encode_object(v).expect("a built-in kind").expect("encodes");
    assert_eq!(&bytes[..4], b"k8s\0");
    decode_object(&bytes).expect("decodes")
}

/// Every field of the kind set, agreed on by k8s-openapi, survives JSON → protobuf → JSON.
fn full<T: DeserializeOwned + Serialize>(api_version: &str, kind: &str) {
    let m = schema::find(api_version, kind).unwrap_or_else(|| panic!("no message for {kind}"));
    let mut obj = sample(m, 7);
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    let typed: T = serde_json::from_value(obj.clone())
        .unwrap_or_else(|e| panic!("{kind}: the sample does not fit k8s-openapi: {e}"));
    let openapi = serde_json::to_value(typed).unwrap();
    // Fields k8s-pb has and k8s-openapi's 1.33 types lack are left out of the comparison.
    let known = intersect(&obj, &openapi);
    assert_eq!(round_trip(&known), known, "{kind}");
    let list = json!({"apiVersion": api_version, "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": "12", "continue": "c"}, "items": [known.clone(), known]});
    // Every kind but a subresource's (Scale, Eviction) and the never-stored reviews has a list.
    let Some(mut enc) = ListEncoder::new(api_version, kind) else {
        assert!(
            kind == "Scale" || kind == "Eviction" || kind.ends_with("Review"),
            "{kind} has no list"
        );
        return;
    };
    for i in list["items"].as_array().unwrap() {
        let mut i = i.clone();
        i.as_object_mut()
            .unwrap()
            .retain(|k, _| k != "apiVersion" && k != "kind");
        enc.push(&i).unwrap();
    }
    let decoded = decode_object(&enc.finish(&list["metadata"]).unwrap()).unwrap();
    assert_eq!(decoded["items"].as_array().unwrap().len(), 2);
    assert_eq!(decoded["metadata"], list["metadata"]);
    // Items of a protobuf list carry no type of their own (the list's says what they are).
    let meta_list = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": "12"}, "items": [{"metadata": partial(&known)["metadata"]}]});
    assert_eq!(round_trip(&meta_list), meta_list);
}

/// The part of `a` that `b` also has (b dropped what its type does not know).
fn intersect(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => Value::Object(
            x.iter()
                .filter_map(|(k, v)| y.get(k).map(|w| (k.clone(), intersect(v, w))))
                .collect(),
        ),
        (Value::Array(x), Value::Array(y)) => {
            Value::Array(x.iter().zip(y).map(|(v, w)| intersect(v, w)).collect())
        }
        _ => a.clone(),
    }
}

#[test]
fn every_served_builtin_kind_round_trips() {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    full::<core::Namespace>("v1", "Namespace");
    full::<core::Pod>("v1", "Pod");
    full::<core::Service>("v1", "Service");
    full::<core::Endpoints>("v1", "Endpoints");
    full::<core::ConfigMap>("v1", "ConfigMap");
    full::<core::Secret>("v1", "Secret");
    full::<core::LimitRange>("v1", "LimitRange");
    full::<core::ResourceQuota>("v1", "ResourceQuota");
    full::<core::Node>("v1", "Node");
    full::<core::PersistentVolume>("v1", "PersistentVolume");
    full::<core::PersistentVolumeClaim>("v1", "PersistentVolumeClaim");
    full::<k8s_openapi::api::storage::v1::StorageClass>("storage.k8s.io/v1", "StorageClass");
    full::<core::Event>("v1", "Event");
    full::<core::ServiceAccount>("v1", "ServiceAccount");
    full::<apps::ReplicaSet>("apps/v1", "ReplicaSet");
    full::<apps::Deployment>("apps/v1", "Deployment");
    full::<apps::DaemonSet>("apps/v1", "DaemonSet");
    full::<coord::Lease>("coordination.k8s.io/v1", "Lease");
    full::<k8s_openapi::api::node::v1::RuntimeClass>("node.k8s.io/v1", "RuntimeClass");
    full::<ext::CustomResourceDefinition>("apiextensions.k8s.io/v1", "CustomResourceDefinition");
    full::<k8s_openapi::api::autoscaling::v1::Scale>("autoscaling/v1", "Scale");
    full::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
    );
    full::<k8s_openapi::api::batch::v1::Job>("batch/v1", "Job");
    full::<k8s_openapi::api::policy::v1::PodDisruptionBudget>("policy/v1", "PodDisruptionBudget");
    full::<k8s_openapi::api::policy::v1::Eviction>("policy/v1", "Eviction");
    full::<k8s_openapi::api::rbac::v1::Role>("rbac.authorization.k8s.io/v1", "Role");
    full::<k8s_openapi::api::rbac::v1::ClusterRole>("rbac.authorization.k8s.io/v1", "ClusterRole");
    full::<k8s_openapi::api::rbac::v1::RoleBinding>("rbac.authorization.k8s.io/v1", "RoleBinding");
    full::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
    );
    full::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    );
    full::<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    );
    full::<k8s_openapi::api::authentication::v1::SelfSubjectReview>(
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
    );
    full::<k8s_openapi::api::discovery::v1::EndpointSlice>("discovery.k8s.io/v1", "EndpointSlice");
    full::<k8s_openapi::api::events::v1::Event>("events.k8s.io/v1", "Event");
}

#[test]
fn special_types_round_trip() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
            "creationTimestamp": "2024-05-01T10:00:00Z", "resourceVersion": "42",
            "managedFields": [{"manager": "kubectl", "operation": "Update",
                "time": "2024-05-01T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}]},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", ""],
            "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
            "livenessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 0},
            "readinessProbe": {"tcpSocket": {"port": 8080}}}],
            "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 0}});
    assert_eq!(round_trip(&pod), pod);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "type": "Opaque", "data": {"k": "AAEC/w=="}, "immutable": true});
    assert_eq!(round_trip(&secret), secret);
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "$schema": "http://json-schema.org/draft-04/schema#",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "spec": {"$ref": "#/definitions/spec", "x-kubernetes-int-or-string": true},
                    "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                    "closed": {"type": "object", "additionalProperties": false},
                    "list": {"type": "array", "items": {"type": "integer"}, "default": [1, 2]}}}}}]}});
    assert_eq!(round_trip(&crd), crd);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"holderIdentity": "a",
        "renewTime": "2024-05-01T10:00:00.250000Z", "leaseDurationSeconds": 15}});
    assert_eq!(round_trip(&lease), lease);
    // The meta kinds under any built-in group version, as client-go sends a DeleteOptions body.
    let opts = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
        "propagationPolicy": "Foreground", "preconditions": {"uid": "u1"}, "dryRun": ["All"]});
    assert_eq!(round_trip(&opts), opts);
    let status = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404,
        "reason": "NotFound", "message": "pods \"x\" not found",
        "details": {"name": "x", "kind": "pods"}, "metadata": {}});
    assert_eq!(round_trip(&status), status);
}

#[test]
fn unknown_fields_are_dropped_and_zero_values_omitted() {
    // A field the schema lacks is not encoded (kube-apiserver would never have stored it).
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"a": "1"}, "notAField": {"x": 1}});
    let back = round_trip(&cm);
    assert_eq!(back.get("notAField"), None);
    assert_eq!(back["data"], json!({"a": "1"}));
    // What a gogo marshaller writes for Go's zero values (empty strings, a zero time) is left
    // out, as Go's JSON leaves it out.
    let mut meta = Vec::new();
    transcode::put_bytes(1, b"c", &mut meta);
    transcode::put_bytes(2, b"", &mut meta);
    transcode::put_bytes(8, b"", &mut meta);
    let mut raw = Vec::new();
    transcode::put_bytes(1, &meta, &mut raw);
    let v = decode_object(&envelope("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    );
}

#[test]
fn bad_and_custom_bodies() {
    let e = decode_object(b"{\"kind\": 1}").unwrap_err();
    assert_eq!(e.code, 400);
    assert!(e.message.contains("magic"), "{}", e.message);
    // A custom resource has no message: 415, as Kubernetes answers.
    let e = decode_object(&envelope("example.com/v1", "Widget", b"")).unwrap_err();
    assert_eq!((e.code, e.reason), (415, "UnsupportedMediaType"));
    assert!(e.message.contains("Widget"), "{}", e.message);
    let e = decode_object(&envelope("v1", "Pod", b"\x0a\x05ab")).unwrap_err();
    assert_eq!(e.code, 400);
    assert!(encode_object(&json!({"apiVersion": "example.com/v1", "kind": "Widget"})).is_none());
}

#[test]
fn negotiation_as_kube_apiserver() {
    let pb = |a: &str, ok: bool| negotiate(a, ok).map(|o| (o.format, o.table));
    use Format::*;
    assert_eq!(pb("", true).unwrap(), (Json, false));
    let kubectl = "application/vnd.kubernetes.protobuf, */*";
    assert_eq!(pb(kubectl, true).unwrap(), (Protobuf, false));
    // A custom resource: the JSON fallback.
    assert_eq!(pb(kubectl, false).unwrap(), (Json, false));
    assert_eq!(negotiate(MEDIA_TYPE, false).unwrap_err().code, 406);
    let get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    assert_eq!(pb(get, true).unwrap(), (Json, true));
    // A Table has no protobuf message: the next acceptable range is taken.
    let pb_table =
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json";
    assert_eq!(pb(pb_table, true).unwrap(), (Json, false));
    // Metadata clients get PartialObjectMetadata, in protobuf too, for any kind.
    let meta_only = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";
    assert!(negotiate(meta_only, false).unwrap().metadata);
    let meta_pb =
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";
    let o = negotiate(meta_pb, false).unwrap();
    assert_eq!((o.format, o.metadata), (Protobuf, true));
    let other = "application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io";
    assert_eq!(negotiate(other, true).unwrap_err().code, 406);
    assert_eq!(
        pb(
            "application/json;q=0.5, application/vnd.kubernetes.protobuf",
            true
        )
        .unwrap(),
        (Protobuf, false)
    );
    let e = negotiate("text/html", true).unwrap_err();
    assert!(e.code == 406 && e.message.contains("text/html"), "{e:?}");
}

#[test]
fn watch_frames_are_length_prefixed_watch_events() {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let frame = watch_frame("ADDED", &obj).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let ev = transcode::decode(
        schema::find("meta.k8s.io/v1", "WatchEvent").unwrap(),
        &frame[4..],
    );
    // The event's object is a RawExtension holding the enveloped object (not JSON), so read
    // it field by field.
    assert!(ev.is_err() || ev.is_ok());
    let fields = transcode::fields(&frame[4..]).unwrap();
    let transcode::Wire::Bytes(ty) = fields[0].1 else {
        panic!()
    };
    assert_eq!(ty, b"ADDED");
    let transcode::Wire::Bytes(ext) = fields[1].1 else {
        panic!()
    };
    let inner = transcode::fields(ext).unwrap();
    let transcode::Wire::Bytes(raw) = inner[0].1 else {
        panic!()
    };
    assert_eq!(decode_object(raw).unwrap(), obj);
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // JSONSchemaProps.not (tag 28) nested 2 000 deep: a 400, not a crash.
    let mut props = Vec::new();
    for _ in 0..2_000 {
        let mut outer = Vec::new();
        transcode::put_bytes(28, &props, &mut outer);
        props = outer;
    }
    let e = decode_object(&envelope(
        "apiextensions.k8s.io/v1",
        "JSONSchemaProps",
        &props,
    ));
    let e = e.map(|_| ()).unwrap_err();
    assert_eq!(e.code, 400, "{}", e.message);
    assert!(e.message.contains("nested"), "{}", e.message);
}

#[test]
fn stored_text_streams_to_the_same_message() {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
    fn same<T: DeserializeOwned + Serialize>(api_version: &str, kind: &str) {
        let m = schema::find(api_version, kind).unwrap();
        let mut obj = sample(m, 7);
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        let typed: T = serde_json::from_value(obj.clone()).unwrap();
        let mut known = intersect(&obj, &serde_json::to_value(typed).unwrap());
        known["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let text = serde_json::to_vec(&known).unwrap();
        let streamed = encode_stored(api_version, kind, &text, "77")
            .unwrap()
            .unwrap();
        known["metadata"]["resourceVersion"] = json!("77");
        assert_eq!(decode_object(&streamed).unwrap(), known, "{kind}");
    }
    same::<core::Pod>("v1", "Pod");
    same::<core::Service>("v1", "Service");
    same::<core::Secret>("v1", "Secret");
    same::<core::Node>("v1", "Node");
    same::<apps::Deployment>("apps/v1", "Deployment");
    same::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
    );
    // Text with escapes, nulls and a field the schema lacks.
    let text = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a\"b","labels":null},"data":{"k\n":"v\u00e9"},"extra":[1,{"x":2}]}"#;
    let v = decode_object(
        &encode_stored("v1", "ConfigMap", text, "5")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a\"b", "resourceVersion": "5"}, "data": {"k\n": "vé"}})
    );
}
