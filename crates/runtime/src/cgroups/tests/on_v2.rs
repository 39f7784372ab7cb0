//! Version-independent directory handling, and the v2 code on a cgroup2 mount.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxCpuBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

use super::*;

#[test]
fn destroy_leaves_directories_it_did_not_create() {
    let root = unique_root();
    let mut guard = Guard::new(&root);
    let mut a = Manager::new(Some(&root.join("a")), "a").unwrap();
    a.create().unwrap();
    guard.managers.push(a.clone());
    let mut b = Manager::new(Some(&root.join("b")), "b").unwrap();
    b.create().unwrap();
    guard.managers.push(b.clone());
    for h in &b.state().hierarchies {
        assert_eq!(
            h.created,
            vec![h.dir.clone()],
            "b found the parent in place"
        );
    }
    // a made the shared parent, but b still lives in it.
    a.destroy().unwrap();
    let parents: Vec<PathBuf> = a
        .state()
        .hierarchies
        .iter()
        .map(|h| h.dir.parent().unwrap().to_path_buf())
        .collect();
    for (h, parent) in a.state().hierarchies.iter().zip(&parents) {
        assert!(!h.dir.exists());
        assert!(parent.is_dir(), "{} removed under b", parent.display());
    }
    // b never made the parent, so it does not remove it either.
    b.destroy().unwrap();
    for parent in &parents {
        assert!(parent.is_dir());
    }
    drop(guard);
    for parent in &parents {
        assert!(!parent.exists(), "guard left {}", parent.display());
    }
}

#[test]
fn an_empty_cpuset_parent_is_filled_from_above() {
    if !v1_host() {
        return;
    }
    let root = unique_root();
    let _guard = Guard::new(&root);
    let m0 = Manager::new(Some(&root.join("c")), "c").unwrap();
    let Some(cpuset) = m0.hierarchy("cpuset") else {
        return;
    };
    // Another container's create made the parent but has not populated it yet.
    let parent = cpuset.dir.parent().unwrap().to_path_buf();
    fs::create_dir(&parent).unwrap();
    let mut m = m0.clone();
    m.create().unwrap();
    let want = fs::read_to_string(cpuset.mountpoint.join("cpuset.cpus")).unwrap();
    assert_eq!(
        fs::read_to_string(parent.join("cpuset.cpus")).unwrap(),
        want
    );
    assert_eq!(
        fs::read_to_string(cpuset.dir.join("cpuset.cpus")).unwrap(),
        want
    );
    m.destroy().unwrap();
    assert!(parent.is_dir(), "the pre-existing parent must stay");
}

/// A failure half-way through the mkdir chain removes every level this create made. (Real
/// cgroupfs gives root no clean way to fail half-way, so the chain runs on a plain directory.)
#[test]
fn create_rolls_back_on_failure() {
    let base = std::env::temp_dir().join(format!("yun-test-rollback-{}", std::process::id()));
    fs::create_dir_all(base.join("existing")).unwrap();
    let mut h = HierarchyState {
        name: "memory".into(),
        kind: Kind::V1,
        controllers: vec!["memory".into()],
        options: "memory".into(),
        mountpoint: base.clone(),
        dir: base.join("existing/new/leaf"),
        created: Vec::new(),
    };
    let leaf = h.dir.clone();
    let e = path::make_dirs(&mut h, |_, dir| {
        if dir == leaf {
            anyhow::bail!("injected failure")
        }
        Ok(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("injected failure"));
    assert!(h.created.is_empty());
    assert!(
        !base.join("existing/new").exists(),
        "a level this create made was left"
    );
    assert!(
        base.join("existing").is_dir(),
        "a pre-existing level was removed"
    );
    fs::remove_dir_all(&base).unwrap();
}

/// The v2 code runs against the hybrid host's cgroup2 mount (only hugetlb is bound there, but
/// membership, freezing, cpu.stat and removal are the same as on a pure v2 host).
#[test]
fn v2_on_the_cgroup2_mount() {
    let mounts = path::mounts().unwrap();
    let Some(mount) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
        eprintln!("skipping: no cgroup2 mount");
        return;
    };
    let _restore = Cgroup2RootRestore::new();
    let root = unique_root();
    let mut guard = Guard::new(&root);
    let mut m = if detect_mode() == Mode::V2 {
        Manager::new(Some(&root.join("ctr")), "x").unwrap()
    } else {
        let path = root.join("ctr");
        let hierarchies = path::discover(Mode::V2, std::slice::from_ref(mount), &path).unwrap();
        Manager::from_state(&CgroupState {
            mode: Mode::V2,
            path,
            hierarchies,
        })
    };
    let offered = m.unified().unwrap().clone();
    let available = |c: &str| v2::available(&offered, c);
    if !available("pids") {
        let res = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(5i64).build().unwrap())
            .build()
            .unwrap();
        let e = m.validate(&res).unwrap_err().to_string();
        assert_eq!(
            e,
            "linux.resources.pids.limit: the pids controller is not available on this host"
        );
    }
    let res = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_runtime(5i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert!(m.validate(&res).is_err());

    m.create().unwrap();
    guard.managers.push(m.clone());
    let dir = m.unified().unwrap().dir.clone();
    assert!(dir.is_dir());
    if available("hugetlb") {
        let unified = HashMap::from([("hugetlb.2MB.max".to_string(), "2097152".to_string())]);
        let res = LinuxResourcesBuilder::default()
            .unified(unified)
            .build()
            .unwrap();
        m.validate(&res).unwrap();
        m.apply(&res).unwrap();
        assert_eq!(read(dir.join("hugetlb.2MB.max")), "2097152");
    }

    let pid = guard.sleeper();
    m.add_pid(pid).unwrap();
    assert_eq!(m.pids().unwrap(), vec![pid]);
    m.freeze().unwrap();
    assert!(m.is_frozen().unwrap());
    let state = read(format!("/proc/{pid}/status"));
    assert!(state.lines().any(|l| l.starts_with("State:")));
    m.thaw().unwrap();
    assert!(!m.is_frozen().unwrap());

    let stats = m.stats().unwrap();
    assert_eq!(stats.memory.usage, MemoryEntry::default());
    if available("hugetlb") {
        assert!(stats.hugetlb.contains_key("2MB"), "{:?}", stats.hugetlb);
    }
    assert_eq!(m.oom_kill_count().unwrap(), 0);
    assert_eq!(
        m.mount_sources(),
        vec![(String::new(), dir.clone(), String::new())]
    );

    guard.kill_children();
    m.destroy().unwrap();
    assert!(!dir.exists());
    assert!(!dir.parent().unwrap().exists());
}
