//! The VM boundary: what a user's disk image may make QEMU open, a format a guest cannot
//! change, a guest's poweroff ending the run, and QEMU's own confinement.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{boot_files, cache, tmp, Env};
use yun_vmm::{run_with, Disk, DiskFormat, Driver, RunOptions, RunSpec, State};

fn opts() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_secs(60)),
        qmp_socket: None,
    }
}

fn spec(cmd: &str, disks: Vec<Disk>) -> RunSpec {
    let (k, i) = boot_files();
    RunSpec {
        kernel: Some(k.clone()),
        initrd: Some(i.clone()),
        memory_mib: 128,
        cmd: vec![cmd.to_string()],
        disks,
        ..RunSpec::default()
    }
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn disk(s: &str) -> Disk {
    s.parse().unwrap()
}

fn run_err(s: &RunSpec) -> String {
    let e = run_with(cache(), s, &opts(), &mut Vec::new()).unwrap_err();
    format!("{e:#}")
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

#[test]
fn qcow2_backed_by_a_host_file_is_refused_at_run_create_and_start() {
    let dir = tmp();
    let evil = path(dir.path(), "evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        &evil,
    ]);

    // A run: refused before QEMU starts, one line naming the disk and the backing file.
    let e = run_err(&spec(
        "cat /dev/vda",
        vec![disk(&format!("{evil},format=qcow2"))],
    ));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&evil) && e.contains("\"/etc/shadow\""), "{e}");
    // backing=allow admits only files in the disk's own directory.
    let e = run_err(&spec(
        "cat /dev/vda",
        vec![disk(&format!("{evil},format=qcow2,backing=allow"))],
    ));
    assert!(e.contains("outside the disk's directory"), "{e}");
    // … after symlinks: a link in the directory that leads out of it is refused too.
    std::os::unix::fs::symlink("/etc/shadow", dir.path().join("link")).unwrap();
    let via_link = path(dir.path(), "via-link.qcow2");
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "-b", "link", "-F", "raw", &via_link,
    ]);
    let e = run_err(&spec(
        "cat /dev/vda",
        vec![disk(&format!("{via_link},format=qcow2,backing=allow"))],
    ));
    assert!(e.contains("/etc/shadow outside"), "{e}");
    // An external data file is another way to name a host file: refused.
    let data = path(dir.path(), "data.raw");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let ext = path(dir.path(), "ext.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={data}"),
        &ext,
        "1M",
    ]);
    let e = run_err(&spec("true", vec![disk(&format!("{ext},format=qcow2"))]));
    assert!(e.contains("data lives in another file"), "{e}");

    // Allowed: a backing file beside the disk, which the guest then reads through it.
    let base = dir.path().join("base.raw");
    let mut bytes = b"yun-backing-ok\n".to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(&base, bytes).unwrap();
    let over = path(dir.path(), "over.qcow2");
    qemu_img(&[
        "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", &over,
    ]);
    let e = run_err(&spec("true", vec![disk(&format!("{over},format=qcow2"))]));
    assert!(e.contains("backing=allow"), "{e}");
    let mut out = Vec::new();
    let ok = spec(
        "head -c 15 /dev/vda",
        vec![disk(&format!("{over},format=qcow2,backing=allow"))],
    );
    assert_eq!(run_with(cache(), &ok, &opts(), &mut out).unwrap(), 0);
    assert_eq!(String::from_utf8_lossy(&out), "yun-backing-ok\n");

    // A managed VM: refused at create (define) and, should the file change later, at start.
    let env = Env::new();
    let mut cfg = env.config("yun-evil", "cat /dev/vda");
    cfg.disks = vec![disk(&format!("{evil},format=qcow2"))];
    let e = format!("{:#}", env.driver.define(&cfg).unwrap_err());
    assert!(e.contains(&evil) && e.contains("/etc/shadow"), "{e}");
    assert!(env.driver.list().unwrap().is_empty());
    let later = path(dir.path(), "later.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", &later, "1M"]);
    cfg.disks = vec![disk(&format!("{later},format=qcow2"))];
    env.driver.define(&cfg).unwrap();
    qemu_img(&["rebase", "-u", "-b", "/etc/shadow", "-F", "raw", &later]);
    let e = format!("{:#}", env.driver.start("yun-evil").unwrap_err());
    assert!(e.contains(&later) && e.contains("/etc/shadow"), "{e}");
    assert_ne!(env.driver.status("yun-evil").unwrap().state, State::Running);
}

/// A raw file whose first bytes are a qcow2 header naming /etc/shadow as backing file: what
/// a guest can write into its raw disk.
fn planted(dir: &Path) -> PathBuf {
    let q = path(dir, "header.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/shadow",
        "-F",
        "raw",
        &q,
    ]);
    let mut bytes = std::fs::read(&q).unwrap();
    bytes.resize(4 << 20, 0);
    let raw = dir.join("planted.img");
    std::fs::write(&raw, bytes).unwrap();
    raw
}

#[test]
fn a_planted_qcow2_header_does_not_change_a_raw_disk() {
    let dir = tmp();
    let raw = planted(dir.path());
    // Given without a format, the disk is raw: the guest sees the header bytes and the
    // file's own size, and nothing of /etc/shadow.
    let s = spec(
        "head -c 3 /dev/vda; echo; cat /sys/block/vda/size; grep -c root: /dev/vda",
        vec![disk(raw.to_str().unwrap())],
    );
    let mut out = Vec::new();
    let status = run_with(cache(), &s, &opts(), &mut out).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out, "QFI\n8192\n0\n", "status {status}");

    // A managed VM records the format at create; its config says raw, whatever the file holds.
    let env = Env::new();
    let mut cfg = env.config("yun-planted", "true");
    cfg.disks = vec![disk(raw.to_str().unwrap())];
    env.driver.define(&cfg).unwrap();
    let st = env.driver.status("yun-planted").unwrap();
    assert_eq!(st.config.disks[0].format, DiskFormat::Raw);
}

/// A user's initramfs: Debian's static busybox and an /init that prints a line and powers off
/// (no yun exit marker, so the run ends only when the machine does).
fn poweroff_initrd(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("init"),
        "#!/bin/busybox sh\n/bin/busybox echo user-init-says-bye\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join("initrd.cpio");
    let st = Command::new("sh")
        .arg("-c")
        .arg("find . | busybox cpio -o -H newc > \"$0\" 2>/dev/null")
        .arg(&out)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// `n` boots per vCPU count; for diagnosis, YUN_TEST_CPUS=1|2 picks one count,
/// YUN_TEST_CMDLINE adds kernel parameters (e.g. `loglevel=7` to see the kernel's last words,
/// `nokaslr` to match addresses with /proc/kallsyms) and YUN_TEST_QMP_DIR gives each boot a
/// QMP socket in that directory, to look at a hung guest from outside (`info registers -a`).
fn poweroff_boots(n: usize) {
    let dir = tmp();
    let initrd = poweroff_initrd(dir.path());
    let (k, _) = boot_files();
    let only: Option<u32> = std::env::var("YUN_TEST_CPUS")
        .ok()
        .and_then(|c| c.parse().ok());
    for cpus in [1, 2].into_iter().filter(|c| only.is_none_or(|o| o == *c)) {
        for boot in 1..=n {
            let s = RunSpec {
                kernel: Some(k.clone()),
                initrd: Some(initrd.clone()),
                cpus,
                memory_mib: 128,
                cmd: vec!["true".into()],
                extra_cmdline: std::env::var("YUN_TEST_CMDLINE").unwrap_or_default(),
                ..RunSpec::default()
            };
            let mut out = Vec::new();
            let o = RunOptions {
                qmp_socket: std::env::var("YUN_TEST_QMP_DIR").ok().map(|d| {
                    PathBuf::from(d).join(format!("qmp-{}-{boot}.sock", std::process::id()))
                }),
                ..opts()
            };
            let r = run_with(cache(), &s, &o, &mut out);
            let out = String::from_utf8_lossy(&out).into_owned();
            let what = format!("{cpus} vCPU(s), boot {boot} of {n}");
            assert_eq!(
                r.unwrap_or_else(|e| panic!("{what}: {e:#}; console: {out:?}")),
                0,
                "{what}"
            );
            assert!(out.contains("user-init-says-bye"), "{what}: {out}");
        }
    }
    // yun's own initramfs, the command itself powering off before /init reports.
    for cpus in [1, 2] {
        let s = RunSpec {
            cpus,
            ..spec("echo going; poweroff -f; sleep 30", Vec::new())
        };
        let mut out = Vec::new();
        assert_eq!(run_with(cache(), &s, &opts(), &mut out).unwrap(), 0);
        assert_eq!(String::from_utf8_lossy(&out), "going\n");
    }
}

/// Under TCG an SMP guest's vCPUs share one host thread: QEMU 7.2's multi-threaded TCG can keep
/// a vCPU in a translated block another vCPU has rewritten, which hung about one 2-vCPU boot in
/// a few hundred (the kernel patching its static keys; see `TCG` in qemu/mod.rs).
#[test]
fn an_smp_guest_under_tcg_runs_its_vcpus_on_one_thread() {
    if !yun_vmm::choose_accel().starts_with("tcg") {
        eprintln!("KVM here: a thread per vCPU, nothing to check");
        return;
    }
    let dir = tmp();
    let sock = dir.path().join("yun-qmp.sock");
    let o = RunOptions {
        qmp_socket: Some(sock.clone()),
        ..opts()
    };
    let s = RunSpec {
        cpus: 2,
        ..spec("sleep 2; echo done", Vec::new())
    };
    let vm = std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = run_with(cache(), &s, &o, &mut out);
        (r, String::from_utf8_lossy(&out).into_owned())
    });
    let mut qmp = yun_vmm::qmp::Qmp::connect(&sock, Duration::from_secs(30)).unwrap();
    let cpus = qmp.execute("query-cpus-fast", None).unwrap();
    let threads: Vec<_> = cpus
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["thread-id"].as_i64().unwrap())
        .collect();
    assert_eq!(threads.len(), 2, "{cpus}");
    assert_eq!(threads[0], threads[1], "a host thread per vCPU: {cpus}");
    drop(qmp);
    let (r, out) = vm.join().unwrap();
    assert_eq!(r.unwrap(), 0);
    assert_eq!(out, "done\n");
}

#[test]
fn a_guest_that_powers_off_ends_the_run_with_0() {
    poweroff_boots(3);
}

/// The same, 20 boots per vCPU count (~2–3 min of TCG): `-- --ignored`.
#[test]
#[ignore]
fn a_guest_that_powers_off_ends_the_run_with_0_twenty_times() {
    poweroff_boots(20);
}

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn assert_confined(pid: u32) {
    assert_eq!(
        status_field(pid, "Seccomp:"),
        "2",
        "QEMU {pid} without seccomp"
    );
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
        assert_eq!(
            status_field(pid, set),
            "0000000000000000",
            "QEMU {pid} {set}"
        );
    }
}

#[test]
fn qemu_runs_under_seccomp_without_capabilities() {
    // A throwaway run, found by its QMP socket.
    let dir = tmp();
    let sock = dir.path().join("yun-qmp.sock");
    let o = RunOptions {
        qmp_socket: Some(sock.clone()),
        ..opts()
    };
    let s = spec("sleep 2; echo done", Vec::new());
    let vm = std::thread::spawn(move || run_with(cache(), &s, &o, &mut Vec::new()));
    yun_vmm::qmp::Qmp::connect(&sock, Duration::from_secs(30)).unwrap();
    let pids = common::processes_with(&sock.to_string_lossy());
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_confined(pids[0]);
    assert_eq!(vm.join().unwrap().unwrap(), 0);

    // A managed VM's QEMU, started by its supervisor.
    let env = Env::new();
    env.driver
        .define(&env.config("yun-sandboxed", "sleep 60"))
        .unwrap();
    env.driver.start("yun-sandboxed").unwrap();
    let pid = env
        .driver
        .status("yun-sandboxed")
        .unwrap()
        .qemu_pid
        .unwrap();
    assert_confined(pid);
    env.driver.stop("yun-sandboxed", true).unwrap();
}
