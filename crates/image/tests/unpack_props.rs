//! Property: whatever a layer tar holds (paths with `..`, absolute paths, symlinks to `/`,
//! to `..` or to a directory outside, hard links, whiteouts, in any order and repeated), the
//! unpacker creates and changes nothing outside the layer root, whether it accepts the
//! layer or refuses it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{tar_of, TestDir, E};
use proptest::prelude::*;
use yun_image::{unpack_layer, UnpackOptions};

/// One generated entry, owned (the tar is written from borrowed [`E`]s).
#[derive(Debug, Clone)]
enum Entry {
    File(String),
    Dir(String),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
}

/// Path components a hostile layer would use: climbs, names of what lies outside, names a
/// symlink may take, whiteouts (plain, opaque, of `..`).
const COMPONENTS: [&str; 9] = [
    "s",
    "a",
    "..",
    ".",
    "victim",
    "outside",
    ".wh.victim",
    ".wh..wh..opq",
    ".wh..",
];

/// Entry paths: mostly through `s` and `a`, the names symlinks are made at, so that
/// sequences often write through a symlink made earlier in the same layer.
fn path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "", "/", "s/", "s/", "s/", "a/", "s/s/", "a/../s/", "../",
        ]),
        prop::collection::vec(prop::sample::select(&COMPONENTS[..]), 1..3),
    )
        .prop_map(|(prefix, parts)| format!("{prefix}{}", parts.join("/")))
}

/// Where symlinks point: up and out of the layer (the root is three levels below the
/// sandbox, which holds `outside/`), to the host's `/` and `/etc`, or anywhere in the layer.
fn symlink_target(outside: String) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "/".to_string(),
            "..".into(),
            "../..".into(),
            "../../..".into(),
            "../../../outside".into(),
            "../../../outside/victim".into(),
            "/etc".into(),
            "a/../../..".into(),
            "s".into(),
            outside.clone(),
            format!("{outside}/victim"),
        ]),
        1 => path(),
    ]
}

fn entry(outside: String) -> impl Strategy<Value = Entry> {
    let link_path = prop::sample::select(vec!["s", "a", "s/s", "a/s", "/s"]).prop_map(String::from);
    prop_oneof![
        3 => path().prop_map(Entry::File),
        1 => path().prop_map(Entry::Dir),
        3 => (link_path, symlink_target(outside)).prop_map(|(p, t)| Entry::Symlink(p, t)),
        2 => (path(), path()).prop_map(|(p, t)| Entry::Hardlink(p, t)),
        1 => path().prop_map(Entry::Fifo),
    ]
}

fn tar_of_entries(entries: &[Entry]) -> Vec<u8> {
    let es: Vec<E> = entries
        .iter()
        .map(|e| match e {
            Entry::File(p) => E::File(p, 0o644, b"layer"),
            Entry::Dir(p) => E::Dir(p, 0o755),
            Entry::Symlink(p, t) => E::Symlink(p, t),
            Entry::Hardlink(p, t) => E::Hardlink(p, t),
            Entry::Fifo(p) => E::Fifo(p),
        })
        .collect();
    tar_of(&es)
}

/// Everything observable about the tree at `root`: per path, its type, mode, owner, size,
/// link count, mtime, content or link target. `skip` is left out (the layer's own box).
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p == skip {
            continue;
        }
        let md = fs::symlink_metadata(&p).unwrap();
        let mut d = format!(
            "{:o} {}:{} size={} nlink={} mtime={}.{}",
            md.mode(),
            md.uid(),
            md.gid(),
            md.size(),
            md.nlink(),
            md.mtime(),
            md.mtime_nsec()
        );
        if md.is_symlink() {
            d += &format!(" -> {:?}", fs::read_link(&p).unwrap());
        } else if md.is_file() {
            d += &format!(" {:?}", fs::read(&p).unwrap());
        } else if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.insert(p, d);
    }
    out
}

/// Names a layer could have made outside the sandbox, through `/` or `/etc` symlinks.
fn host_names() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["/", "/etc", "/tmp"] {
        for c in COMPONENTS {
            if !matches!(c, "." | ".." | "etc") {
                v.push(Path::new(dir).join(c));
            }
        }
    }
    v
}

#[test]
fn no_entry_sequence_touches_anything_outside_the_layer_root() {
    let t = TestDir::new("props");
    let outside = t.path.join("outside");
    fs::create_dir_all(outside.join("a")).unwrap();
    fs::write(outside.join("victim"), b"keep me").unwrap();
    let boxes = t.path.join("box");
    fs::create_dir_all(&boxes).unwrap();
    let host_before: Vec<bool> = host_names().iter().map(|p| p.exists()).collect();
    let passwd = fs::metadata("/etc/passwd").unwrap();
    let before = snapshot(&t.path, &boxes);
    let outside_str = outside.display().to_string();

    let config = ProptestConfig {
        cases: 100,
        failure_persistence: None,
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = prop::collection::vec(entry(outside_str), 1..10);
    let counter = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |entries| {
        let n = counter.get() + 1;
        counter.set(n);
        // The layer root two levels down, so `../..` from it reaches the sandbox.
        let dest = boxes.join(format!("{n}")).join("layer");
        fs::create_dir_all(&dest).unwrap();
        let tar = tar_of_entries(&entries);
        let _ = unpack_layer(Cursor::new(tar), &dest, &UnpackOptions::default());
        let after = snapshot(&t.path, &boxes);
        let beside: Vec<_> = fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let _ = fs::remove_dir_all(boxes.join(format!("{n}")));
        prop_assert_eq!(&after, &before, "outside the layer changed");
        prop_assert_eq!(beside, ["layer"], "beside the layer root");
        let boxes_left: Vec<_> = fs::read_dir(&boxes).unwrap().collect();
        prop_assert!(
            boxes_left.is_empty(),
            "beside the layer's box: {:?}",
            boxes_left
        );
        let host_now: Vec<bool> = host_names().iter().map(|p| p.exists()).collect();
        prop_assert_eq!(&host_now, &host_before, "a name appeared on the host");
        let pw = fs::metadata("/etc/passwd").unwrap();
        prop_assert_eq!(
            (pw.nlink(), pw.mtime(), pw.mtime_nsec()),
            (passwd.nlink(), passwd.mtime(), passwd.mtime_nsec())
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
