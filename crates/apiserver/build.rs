//! Builds the protobuf schema of every built-in kind (`$OUT_DIR/k8s_schema.rs`) from data in
//! two crates, read as data and never compiled into the server:
//!
//! - `k8s-pb` (kube-rs) holds the prost messages generated from Kubernetes' `generated.proto`
//!   files: each message's fields with their tags, wire types and message types, and each
//!   module's group and version. It ships no `.proto` files or descriptor set, so its
//!   `#[prost(...)]` attributes are the descriptor, parsed with `syn`.
//! - `k8s-openapi` holds the JSON names of each kind's fields (`"clusterIP" => Field::…`),
//!   which the proto field names lose (`cluster_ip`); the two are matched by their letters.
//!
//! Both crates' sources are found through `cargo metadata` (the lockfile pins them).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{TokenStream, TokenTree};
use syn::{Fields, Item, Type};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (pb, openapi) = crate_sources();
    let json_names = openapi_json_names(&openapi.join("src/v1_33"));
    let mut messages = Vec::new();
    let mut modules = Vec::new();
    walk_pb(&pb.join("src"), &[], &mut messages, &mut modules);
    let out = render(&messages, &modules, &json_names);
    let path = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("k8s_schema.rs");
    std::fs::write(path, out).expect("writing k8s_schema.rs");
}

/// The source directories of k8s-pb and k8s-openapi, from `cargo metadata`.
fn crate_sources() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let dir = |name: &str| -> PathBuf {
        let pkg = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("package {name} is not in the dependency graph"));
        let m = PathBuf::from(pkg["manifest_path"].as_str().unwrap());
        let d = m.parent().unwrap().to_path_buf();
        println!("cargo:rerun-if-changed={}", m.display());
        d
    };
    (dir("k8s-pb"), dir("k8s-openapi"))
}

/// Letters and digits only, lower case: how a proto field (`x_kubernetes_embedded_resource`,
/// `r#ref`) is matched with its JSON name (`x-kubernetes-embedded-resource`, `$ref`).
fn norm(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// (module path, lower-case struct name) → the JSON field names of that k8s-openapi type.
fn openapi_json_names(root: &Path) -> HashMap<(String, String), Vec<String>> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = dir
                .strip_prefix(root)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("::");
            let src = std::fs::read_to_string(&p).unwrap();
            let Ok(tokens) = TokenStream::from_str(&src) else {
                continue;
            };
            let mut flat = Vec::new();
            flatten(tokens, &mut flat);
            let mut name = None;
            let mut keys = Vec::new();
            for w in flat.windows(5) {
                if let (TokenTree::Ident(a), TokenTree::Ident(b)) = (&w[0], &w[1]) {
                    if a == "struct" && name.is_none() {
                        name = Some(b.to_string().to_ascii_lowercase());
                    }
                }
                // `"clusterIP" => Field::Key_cluster_ip`
                if let (TokenTree::Literal(l), TokenTree::Punct(e), TokenTree::Punct(g)) =
                    (&w[0], &w[1], &w[2])
                {
                    let is_field = matches!(&w[3], TokenTree::Ident(f) if f == "Field");
                    let lit = l.to_string();
                    if e.as_char() == '=' && g.as_char() == '>' && is_field && lit.starts_with('"')
                    {
                        keys.push(lit.trim_matches('"').to_string());
                    }
                }
            }
            if let Some(n) = name {
                out.insert((module, n), keys);
            }
        }
    }
    out
}

fn flatten(ts: TokenStream, out: &mut Vec<TokenTree>) {
    for t in ts {
        match t {
            TokenTree::Group(g) => flatten(g.stream(), out),
            other => out.push(other),
        }
    }
}

struct Msg {
    module: Vec<String>,
    name: String,
    fields: Vec<PbField>,
}

struct PbField {
    rust: String,
    tag: u32,
    /// string, int32, int64, bool, double, bytes, message, map_string, map_bytes, map_message
    kind: String,
    repeated: bool,
    /// For message and map_message: the module path and name of the message.
    target: Option<(Vec<String>, String)>,
}

/// Read every `mod.rs` of k8s-pb: its structs, and (from `impl crate::Resource`) the
/// module's group and version.
fn walk_pb(dir: &Path, module: &[String], msgs: &mut Vec<Msg>, mods: &mut Vec<ModuleGv>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let p = entry.path();
        if p.is_dir() {
            let mut m = module.to_vec();
            m.push(p.file_name().unwrap().to_string_lossy().into_owned());
            walk_pb(&p, &m, msgs, mods);
        } else if p.file_name().is_some_and(|n| n == "mod.rs") {
            let src = std::fs::read_to_string(&p).unwrap();
            let file = syn::parse_file(&src).expect("parsing k8s-pb");
            let mut gv = None;
            for item in file.items {
                match item {
                    Item::Struct(s) => {
                        if let Some(m) = message(module, &s) {
                            msgs.push(m);
                        }
                    }
                    Item::Impl(i) if gv.is_none() => gv = group_version(&i),
                    _ => {}
                }
            }
            if let Some((group, version)) = gv {
                mods.push(ModuleGv {
                    module: module.to_vec(),
                    group,
                    version,
                });
            }
        }
    }
}

struct ModuleGv {
    module: Vec<String>,
    group: String,
    version: String,
}

fn group_version(i: &syn::ItemImpl) -> Option<(String, String)> {
    let (_, path, _) = i.trait_.as_ref()?;
    if path.segments.last()?.ident != "Resource" {
        return None;
    }
    let mut group = None;
    let mut version = None;
    for it in &i.items {
        if let syn::ImplItem::Const(c) = it {
            if let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &c.expr
            {
                match c.ident.to_string().as_str() {
                    "GROUP" => group = Some(s.value()),
                    "VERSION" => version = Some(s.value()),
                    _ => {}
                }
            }
        }
    }
    Some((group?, version?))
}

fn message(module: &[String], s: &syn::ItemStruct) -> Option<Msg> {
    let is_message = s.attrs.iter().any(|a| {
        a.path().is_ident("derive") && a.meta.to_token_stream_string().contains("Message")
    });
    if !is_message {
        return None;
    }
    let Fields::Named(named) = &s.fields else {
        return None;
    };
    let mut fields = Vec::new();
    for f in &named.named {
        let attr = f.attrs.iter().find(|a| a.path().is_ident("prost"))?;
        let spec = attr.meta.to_token_stream_string();
        let rust = f.ident.as_ref()?.to_string();
        let rust = rust.trim_start_matches("r#").to_string();
        let tag: u32 = spec
            .split("tag = \"")
            .nth(1)?
            .split('"')
            .next()?
            .parse()
            .ok()?;
        let repeated = spec.contains("repeated");
        let inner = spec
            .trim_start_matches("prost")
            .trim_start_matches(['(', ' ']);
        let kind = if inner.starts_with("btree_map") {
            if spec.contains("\"string, string\"") {
                "map_string"
            } else if spec.contains("\"string, bytes\"") {
                "map_bytes"
            } else {
                "map_message"
            }
        } else {
            inner.split([',', ' ']).next()?
        }
        .to_string();
        let target = if kind == "message" || kind == "map_message" {
            Some(resolve(module, &innermost(&f.ty)))
        } else {
            None
        };
        fields.push(PbField {
            rust,
            tag,
            kind,
            repeated,
            target,
        });
    }
    Some(Msg {
        module: module.to_vec(),
        name: s.ident.to_string(),
        fields,
    })
}

trait TokensString {
    fn to_token_stream_string(&self) -> String;
}

impl TokensString for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        quote::ToTokens::to_token_stream(self).to_string()
    }
}

/// The message path inside `Option<…>`, `Vec<…>`, `Box<…>` or a map's value.
fn innermost(ty: &Type) -> syn::Path {
    let Type::Path(tp) = ty else {
        panic!("unexpected field type");
    };
    let last = tp.path.segments.last().unwrap();
    let wrapper = ["Option", "Vec", "Box", "BTreeMap"].contains(&last.ident.to_string().as_str());
    if wrapper {
        if let syn::PathArguments::AngleBracketed(a) = &last.arguments {
            if let Some(syn::GenericArgument::Type(t)) = a.args.last() {
                return innermost(t);
            }
        }
    }
    tp.path.clone()
}

/// A path relative to `module` (`super::super::x::Y`, or `Y` in the same module).
fn resolve(module: &[String], path: &syn::Path) -> (Vec<String>, String) {
    let mut m = module.to_vec();
    let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    let (name, dirs) = segs.split_last().unwrap();
    for d in dirs {
        if d == "super" {
            m.pop();
        } else {
            m.push(d.clone());
        }
    }
    (m, name.clone())
}

/// Messages whose JSON form is not an object of their fields.
fn special(module: &[String], name: &str) -> &'static str {
    let m = module.join("::");
    match (m.as_str(), name) {
        ("apimachinery::pkg::apis::meta::v1", "Time") => "Time",
        ("apimachinery::pkg::apis::meta::v1", "MicroTime") => "MicroTime",
        ("apimachinery::pkg::apis::meta::v1", "Duration") => "Duration",
        ("apimachinery::pkg::apis::meta::v1", "FieldsV1") => "RawJson",
        ("apimachinery::pkg::apis::meta::v1", "Verbs") => "Array",
        ("apimachinery::pkg::runtime", "RawExtension") => "RawJson",
        ("apimachinery::pkg::api::resource", "Quantity") => "Quantity",
        ("apimachinery::pkg::util::intstr", "IntOrString") => "IntOrString",
        (_, "Json") if m.starts_with("apiextensions_apiserver") => "RawJson",
        (_, "JsonSchemaPropsOrArray") => "PropsOrArray",
        (_, "JsonSchemaPropsOrBool") => "PropsOrBool",
        (_, "JsonSchemaPropsOrStringArray") => "PropsOrStringArray",
        (_, "ExtraValue") => "Array",
        _ => "None",
    }
}

/// lowerCamelCase of a snake_case proto field, for fields k8s-openapi does not name.
fn camel(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('_').enumerate() {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            if i == 0 {
                out.push(first);
            } else {
                out.push(first.to_ascii_uppercase());
            }
            out.extend(c);
        }
    }
    out
}

fn render(
    msgs: &[Msg],
    mods: &[ModuleGv],
    json_names: &HashMap<(String, String), Vec<String>>,
) -> String {
    let index: HashMap<(Vec<String>, String), usize> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.module.clone(), m.name.clone()), i))
        .collect();
    let mut out = String::from("// Generated by build.rs from k8s-pb and k8s-openapi.\n");
    out.push_str("pub static MESSAGES: &[Message] = &[\n");
    for m in msgs {
        let module = m.module.join("::");
        let lower = m.name.to_ascii_lowercase();
        // A version k8s-openapi does not carry (apiextensions v1beta1) takes its names from
        // the same type in a sibling version.
        let exact = json_names.contains_key(&(module.clone(), lower.clone()));
        let names = json_names
            .get(&(module.clone(), lower.clone()))
            .or_else(|| {
                let parent = m.module[..m.module.len().saturating_sub(1)].join("::");
                json_names
                    .iter()
                    .filter(|((md, n), _)| {
                        *n == lower && md.rsplit_once("::").is_some_and(|(p, _)| p == parent)
                    })
                    .map(|(_, v)| v)
                    .max_by_key(|v| v.len())
            });
        let by_norm: BTreeMap<String, &String> =
            names.into_iter().flatten().map(|n| (norm(n), n)).collect();
        let _ = writeln!(
            out,
            "  Message {{ name: \"{module}::{}\", special: Special::{}, fields: &[",
            m.name,
            special(&m.module, &m.name)
        );
        for f in &m.fields {
            let named = by_norm.get(&norm(&f.rust));
            // A message field the JSON type does not name is a Go struct embedded inline
            // (`Probe.handler`, `Volume.volumeSource`): its fields sit in the parent's JSON.
            // Told apart from a field k8s-openapi lacks by its fields being the parent's.
            let inline = f.kind == "message"
                && exact
                && named.is_none()
                && f.target.as_ref().is_some_and(|t| {
                    let target = &msgs[msg_index(&index, t)];
                    // Most, not all: k8s-pb may be a release ahead of k8s-openapi's types.
                    let known = target
                        .fields
                        .iter()
                        .filter(|tf| by_norm.contains_key(&norm(&tf.rust)))
                        .count();
                    !target.fields.is_empty() && known * 2 > target.fields.len()
                });
            let json = named
                .map(|s| s.to_string())
                .unwrap_or_else(|| camel(&f.rust));
            let ty = match (f.kind.as_str(), &f.target) {
                ("message", Some(t)) => format!("Ty::Message({})", msg_index(&index, t)),
                ("map_message", Some(t)) => format!("Ty::MapMessage({})", msg_index(&index, t)),
                ("string", _) => "Ty::String".into(),
                ("int32", _) => "Ty::Int32".into(),
                ("int64", _) => "Ty::Int64".into(),
                ("bool", _) => "Ty::Bool".into(),
                ("double", _) => "Ty::Double".into(),
                ("bytes", _) => "Ty::Bytes".into(),
                ("map_string", _) => "Ty::MapString".into(),
                ("map_bytes", _) => "Ty::MapBytes".into(),
                (k, _) => panic!("unhandled prost kind {k} in {module}::{}", m.name),
            };
            let _ = writeln!(
                out,
                "    Field {{ json: {json:?}, tag: {}, ty: {ty}, repeated: {}, inline: {inline} }},",
                f.tag, f.repeated
            );
        }
        out.push_str("  ]},\n");
    }
    out.push_str("];\n\n");
    // apiVersion and kind → message, for every message of a module that serves a group.
    out.push_str("pub static KINDS: &[(&str, &str, u16)] = &[\n");
    let mut gvs: Vec<(String, Vec<String>)> = mods
        .iter()
        .map(|g| {
            let av = if g.group.is_empty() {
                g.version.clone()
            } else {
                format!("{}/{}", g.group, g.version)
            };
            (av, g.module.clone())
        })
        .collect();
    // The meta types (Status, DeleteOptions, WatchEvent, List, …) belong to every group.
    gvs.push((
        "meta.k8s.io/v1".into(),
        ["apimachinery", "pkg", "apis", "meta", "v1"]
            .map(String::from)
            .to_vec(),
    ));
    for (av, module) in gvs {
        for (i, m) in msgs.iter().enumerate() {
            if m.module == module {
                let _ = writeln!(out, "  ({av:?}, {:?}, {i}),", m.name.to_ascii_lowercase());
            }
        }
    }
    out.push_str("];\n");
    out
}

fn msg_index(index: &HashMap<(Vec<String>, String), usize>, t: &(Vec<String>, String)) -> usize {
    *index
        .get(t)
        .unwrap_or_else(|| panic!("message {}::{} not found", t.0.join("::"), t.1))
}
