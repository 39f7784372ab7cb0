//! Managed VMs through the QEMU driver: lifecycle, exit reasons, snapshots, bad input.

mod common;

use std::time::Duration;

use common::{link_exists, ping, processes_with, Env, Link};
use yun_vmm::{Driver, NetRequest, State};

#[test]
fn lifecycle_pause_resume_stop_start() {
    let env = Env::new();
    let d = &env.driver;
    d.define(&env.config("yun-life", "echo booted; while true; do sleep 1; done"))
        .unwrap();
    assert_eq!(d.status("yun-life").unwrap().state, State::Defined);
    d.start("yun-life").unwrap();
    let st = d.status("yun-life").unwrap();
    assert_eq!(st.state, State::Running, "{st:?}");
    assert!(st.qemu_pid.is_some() && st.supervisor_pid.is_some());
    env.wait_console("yun-life", "booted");

    let e = d.start("yun-life").unwrap_err().to_string();
    assert!(e.contains("already running"), "{e}");
    let e = d.resume("yun-life").unwrap_err().to_string();
    assert!(e.contains("not paused"), "{e}");

    d.pause("yun-life").unwrap();
    env.wait_state("yun-life", State::Paused);
    let e = d.pause("yun-life").unwrap_err().to_string();
    assert!(e.contains("cannot pause"), "{e}");
    d.resume("yun-life").unwrap();
    env.wait_state("yun-life", State::Running);

    let stats = d.stats("yun-life").unwrap();
    assert!(stats.supervisor_rss_kib > 0 && stats.hypervisor_rss_kib > stats.supervisor_rss_kib);
    // The booted guest touched some of its RAM, never more than it has.
    let ram = stats.guest_ram_rss_kib.expect("guest RAM mapping found");
    assert!(ram > 1024 && ram <= 128 * 1024, "{stats:?}");

    // The ACPI power button: the guest's init powers off at once, well inside the grace
    // period (10 s) after which `stop` would quit QEMU itself.
    let pressed = std::time::Instant::now();
    d.stop("yun-life", false).unwrap();
    assert!(
        pressed.elapsed() < Duration::from_secs(8),
        "graceful stop took {:?}",
        pressed.elapsed()
    );
    let st = d.status("yun-life").unwrap();
    assert_eq!(st.state, State::Stopped);
    assert_eq!(st.reason.as_deref(), Some("poweroff"), "{st:?}");
    let dir = env.data().join("vm/machines/yun-life");
    for s in ["qmp.sock", "sup.sock", "console.sock"] {
        assert!(!dir.join(s).exists(), "{s} left behind");
    }
    let e = d.stop("yun-life", false).unwrap_err().to_string();
    assert!(e.contains("not running"), "{e}");

    // Started again, it boots afresh; rm -f removes it while running.
    d.start("yun-life").unwrap();
    let pid = d.status("yun-life").unwrap().qemu_pid.unwrap();
    let e = d.undefine("yun-life", false).unwrap_err().to_string();
    assert!(e.contains("running"), "{e}");
    d.undefine("yun-life", true).unwrap();
    assert!(!dir.exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn exit_reasons_poweroff_panic_killed() {
    let env = Env::new();
    let d = &env.driver;
    d.define(&env.config("yun-off", "echo bye; exit 5"))
        .unwrap();
    // The kernel panics on a sysrq crash; pvpanic reports it.
    d.define(&env.config("yun-panic", "echo c > /proc/sysrq-trigger; sleep 60"))
        .unwrap();
    d.define(&env.config("yun-kill", "while true; do sleep 1; done"))
        .unwrap();
    for n in ["yun-off", "yun-panic", "yun-kill"] {
        d.start(n).unwrap();
    }
    let st = env.wait("yun-off", "ended", |s| !s.state.is_live());
    assert_eq!(st.state, State::Stopped, "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("poweroff (exit 5)"));

    let st = env.wait("yun-panic", "ended", |s| !s.state.is_live());
    assert_eq!(st.state, State::Failed, "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("guest panic"));

    let pid = d.status("yun-kill").unwrap().qemu_pid.unwrap();
    // SAFETY: kill(2) of the QEMU process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let st = env.wait("yun-kill", "ended", |s| !s.state.is_live());
    assert_eq!(st.state, State::Failed, "{st:?}");
    assert_eq!(st.reason.as_deref(), Some("killed (signal 9)"));

    // A killed supervisor takes QEMU with it and the VM shows as failed.
    d.start("yun-kill").unwrap();
    let st = d.status("yun-kill").unwrap();
    let (sup, qemu) = (st.supervisor_pid.unwrap(), st.qemu_pid.unwrap());
    // SAFETY: kill(2) of the supervisor this test started.
    unsafe { libc::kill(sup as i32, libc::SIGKILL) };
    let st = env.wait("yun-kill", "failed", |s| s.state == State::Failed);
    assert_eq!(st.reason.as_deref(), Some("supervisor died"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{qemu}/exe")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn snapshot_restore_continues_the_guest() {
    let env = Env::new();
    let d = &env.driver;
    d.define(&env.config(
        "yun-snap",
        "i=0; while true; do echo count-$i; i=$((i+1)); sleep 0.2; done",
    ))
    .unwrap();
    let e = d.restore("yun-snap", "t1").unwrap_err().to_string();
    assert!(e.contains("no snapshot"), "{e}");
    d.start("yun-snap").unwrap();
    env.wait_console("yun-snap", "count-3\n");
    d.snapshot("yun-snap", "t1").unwrap();
    assert_eq!(d.status("yun-snap").unwrap().state, State::Running);
    let e = d.restore("yun-snap", "t1").unwrap_err().to_string();
    assert!(e.contains("stop it"), "{e}");
    let e = d.snapshot("yun-snap", "../x").unwrap_err().to_string();
    assert!(e.starts_with("tag"), "{e}");
    // Let the original run on, so its counter is well past the snapshot's.
    let at_stop = env.wait_console("yun-snap", "count-15\n");
    d.stop("yun-snap", true).unwrap();
    let log = d.console("yun-snap").unwrap().log;
    let before = std::fs::metadata(&log).unwrap().len() as usize;
    drop(at_stop);

    d.restore("yun-snap", "t1").unwrap();
    assert!(d.status("yun-snap").unwrap().state.is_live());
    // The restored guest counts on from the snapshot: never from 0 again.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let after = loop {
        let bytes = std::fs::read(&log).unwrap();
        let text = String::from_utf8_lossy(&bytes[before..]).into_owned();
        let new: Vec<u32> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("count-")?.parse().ok())
            .collect();
        if new.len() >= 3 {
            break new;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no counting after restore"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        after[0] >= 3,
        "restored guest restarted counting: {after:?}"
    );
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    d.stop("yun-snap", true).unwrap();
    let st = d.status("yun-snap").unwrap();
    assert_eq!(st.reason.as_deref(), Some("stopped"), "{st:?}");
}

#[test]
fn bad_input_is_one_clear_error_and_leaves_nothing() {
    let env = Env::new();
    let d = &env.driver;
    let data = env.data().to_path_buf();
    let mut cfg = env.config("yun-bad", "true");
    d.define(&cfg).unwrap();
    let e = d.define(&cfg).unwrap_err().to_string();
    assert_eq!(e, "vm yun-bad: name already in use");

    let mut check = |name: &str, tweak: &dyn Fn(&mut yun_vmm::VmConfig), want: &str| {
        cfg = env.config(name, "true");
        tweak(&mut cfg);
        let e = format!("{:#}", d.define(&cfg).unwrap_err());
        assert!(e.contains(want), "{name}: {e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(!data.join("vm/machines").join(name).exists());
    };
    let nowhere = data.join("nope");
    check("yun-nok", &|c| c.kernel = Some(nowhere.clone()), "kernel");
    let junk = data.join("junk");
    std::fs::write(&junk, b"not a kernel at all").unwrap();
    let junk2 = junk.clone();
    check(
        "yun-junk",
        &move |c| c.kernel = Some(junk2.clone()),
        "corrupt",
    );
    let junk3 = junk.clone();
    check(
        "yun-junki",
        &move |c| c.initrd = Some(junk3.clone()),
        "initrd",
    );
    check("yun-huge", &|c| c.memory_mib = u32::MAX / 2, "available");
    check("yun-cpu0", &|c| c.cpus = 0, "cpus 0");
    let missing = data.join("missing.img");
    check(
        "yun-nodisk",
        &move |c| c.disks = vec![format!("{},ro", missing.display()).parse().unwrap()],
        "no such file",
    );
    let bad_qcow = data.join("bad.qcow2");
    std::fs::write(&bad_qcow, vec![0u8; 4096]).unwrap();
    check(
        "yun-badq",
        &move |c| {
            c.disks = vec![format!("{},format=qcow2", bad_qcow.display())
                .parse()
                .unwrap()]
        },
        "not a qcow2",
    );
    let e = d
        .define(&env.config("../x", "true"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("name"), "{e}");
    let e = d.start("yun-none").unwrap_err().to_string();
    assert_eq!(e, "vm yun-none: no such VM");

    // Nothing but the one good VM's directory; no QEMU with our data dir on its command line.
    let left: Vec<_> = std::fs::read_dir(data.join("vm/machines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["yun-bad".to_string()]);
    assert!(processes_with(&data.to_string_lossy()).is_empty());
}

#[test]
fn disk_open_read_write_elsewhere_is_refused() {
    let env = Env::new();
    let other = Env::new(); // a second data dir: only QEMU's own image locking sees the clash
    let img = env.data().join("yun-shared.img");
    yun_vmm::make_ext4(&img, 16, None, None).unwrap();
    let rw: yun_vmm::Disk = img.to_str().unwrap().parse().unwrap();
    let ro: yun_vmm::Disk = format!("{},ro", img.display()).parse().unwrap();
    let mut a = env.config("yun-a", "while true; do sleep 1; done");
    a.disks = vec![rw.clone()];
    env.driver.define(&a).unwrap();
    env.driver.start("yun-a").unwrap();

    let mut b = env.config("yun-b", "true");
    b.disks = vec![ro];
    env.driver.define(&b).unwrap();
    let e = format!("{:#}", env.driver.start("yun-b").unwrap_err());
    assert!(e.contains("already open read-write by VM \"yun-a\""), "{e}");

    let mut c = other.config("yun-c", "true");
    c.disks = vec![rw];
    other.driver.define(&c).unwrap();
    let e = format!("{:#}", other.driver.start("yun-c").unwrap_err());
    assert!(
        e.contains("already open read-write by another process"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    let dir = other.data().join("vm/machines/yun-c");
    for s in ["qmp.sock", "sup.sock", "console.sock", "launch.json"] {
        assert!(!dir.join(s).exists(), "{s} left behind");
    }
    assert!(processes_with(&other.data().to_string_lossy()).is_empty());
}

#[test]
fn image_vm_keeps_its_root_disk() {
    let env = Env::new();
    let mut cfg = env.config("yun-img", "");
    cfg.cmd = vec!["echo kept > /persist; grep -c ' / ext4' /proc/mounts".into()];
    cfg.image = Some("busybox".into());
    env.driver.define(&cfg).unwrap();
    env.driver.start("yun-img").unwrap();
    let st = env.wait("yun-img", "ended", |s| !s.state.is_live());
    assert_eq!(st.reason.as_deref(), Some("poweroff (exit 0)"), "{st:?}");
    let root = env.data().join("vm/machines/yun-img/root.ext4");
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /persist"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept\n");
}

/// Puts the host's KSM settings back as they were.
struct KsmGuard(yun_vmm::KsmStatus);

impl Drop for KsmGuard {
    fn drop(&mut self) {
        let _ = yun_vmm::ksm_tune(self.0.pages_to_scan, self.0.sleep_millisecs);
        let _ = yun_vmm::ksm_set(self.0.run == 1);
    }
}

#[test]
fn ksm_shares_pages_of_identical_vms() {
    let env = Env::new();
    let _restore = KsmGuard(yun_vmm::ksm_status().unwrap());
    for n in ["yun-ksm1", "yun-ksm2"] {
        env.driver
            .define(&env.config(n, "while true; do sleep 1; done"))
            .unwrap();
        env.driver.start(n).unwrap();
    }
    yun_vmm::ksm_tune(20000, 10).unwrap();
    yun_vmm::ksm_set(true).unwrap();
    // Each VM's own guest RAM mapping shows merged pages: these two VMs share, not just some
    // other process on the host.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let merged: Vec<u64> = ["yun-ksm1", "yun-ksm2"]
            .iter()
            .map(|n| env.driver.stats(n).unwrap().guest_ram_ksm_kib.unwrap_or(0))
            .collect();
        if merged.iter().all(|&k| k > 4096) {
            let s = yun_vmm::ksm_status().unwrap();
            assert!(s.pages_sharing > 1000, "{s:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sharing: merged KiB {merged:?}, {:?}",
            yun_vmm::ksm_status().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vm_on_a_bridge_network_reaches_and_is_reached() {
    let env = Env::new();
    let d = &env.driver;
    let bridge = format!("yunvb{}", std::process::id() % 100_000);
    let _bridge = Link::owned_by_yun(&bridge);
    let join = || NetRequest {
        bridge: bridge.clone(),
        subnet: "10.213.92.0/24".parse().unwrap(),
    };
    let mut cfg = env.config(
        "yun-net",
        "until ping -c 1 -W 1 10.213.92.1 >/dev/null; do sleep 0.2; done; echo guest-reached-host; \
         while true; do sleep 1; done",
    );
    cfg.join = Some(join());
    d.define(&cfg).unwrap();
    let net = d.status("yun-net").unwrap().config.network.unwrap();
    assert_eq!(net.address.to_string(), "10.213.92.2/24");
    assert_eq!(net.gateway.to_string(), "10.213.92.1");
    // A second VM on the network gets the next address; its removal gives it back.
    let mut other = env.config("yun-net2", "true");
    other.join = Some(join());
    d.define(&other).unwrap();
    let other_net = d.status("yun-net2").unwrap().config.network.unwrap();
    assert_eq!(other_net.address.to_string(), "10.213.92.3/24");
    d.undefine("yun-net2", false).unwrap();

    d.start("yun-net").unwrap();
    assert!(
        link_exists(&net.tap),
        "tap {} missing while running",
        net.tap
    );
    env.wait_console("yun-net", "guest-reached-host");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ping(&bridge, "10.213.92.2") {
        assert!(
            std::time::Instant::now() < deadline,
            "the host never reached the guest"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.stop("yun-net", true).unwrap();
    assert!(!link_exists(&net.tap), "tap {} left after stop", net.tap);

    // Killing the supervisor leaves the tap; the next start replaces it and rm removes it.
    d.start("yun-net").unwrap();
    let sup = d.status("yun-net").unwrap().supervisor_pid.unwrap();
    // SAFETY: kill(2) on a pid this test started; no memory is involved.
    unsafe { libc::kill(sup as i32, libc::SIGKILL) };
    env.wait("yun-net", "failed", |s| s.state == State::Failed);
    d.start("yun-net").unwrap();
    d.undefine("yun-net", true).unwrap();
    assert!(!link_exists(&net.tap), "tap {} left after rm", net.tap);
    // No address stays held.
    let pool = env.data().join("net/10.213.92.0");
    let held: Vec<_> = std::fs::read_dir(&pool)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(held.is_empty(), "addresses still held: {held:?}");
}

#[test]
fn a_tap_that_cannot_join_its_bridge_is_one_line_and_leaves_nothing() {
    let env = Env::new();
    let d = &env.driver;
    // Not a bridge: a tap of the test's own, which cannot be a master.
    let not_bridge = format!("yunnb{}", std::process::id() % 100_000);
    let _nb = Link::tap(&not_bridge, "10.213.93.1/24");
    let mut cfg = env.config("yun-badnet", "true");
    cfg.join = Some(NetRequest {
        bridge: not_bridge.clone(),
        subnet: "10.213.93.0/24".parse().unwrap(),
    });
    d.define(&cfg).unwrap();
    let tap = d.status("yun-badnet").unwrap().config.network.unwrap().tap;
    let e = format!("{:#}", d.start("yun-badnet").unwrap_err());
    assert!(
        e.contains(&format!("tap {tap}: cannot create on bridge {not_bridge}")),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
    assert!(!link_exists(&tap), "tap {tap} left behind");
    let st = d.status("yun-badnet").unwrap();
    assert_eq!(st.state, State::Failed, "{st:?}");
    assert!(processes_with(&env.data().to_string_lossy()).is_empty());
}

#[test]
fn balloon_takes_memory_back_and_gives_it_again() {
    let env = Env::new();
    let d = &env.driver;
    let mut cfg = env.config(
        "yun-balloon",
        "while true; do grep MemTotal /proc/meminfo; sleep 0.3; done",
    );
    cfg.memory_mib = 256;
    d.define(&cfg).unwrap();
    let e = d.balloon("yun-balloon", 128).unwrap_err().to_string();
    assert!(e.contains("not running"), "{e}");
    d.start("yun-balloon").unwrap();
    env.wait_console("yun-balloon", "MemTotal");
    assert_eq!(d.stats("yun-balloon").unwrap().balloon_mib, Some(256));

    d.balloon("yun-balloon", 128).unwrap();
    assert_eq!(d.stats("yun-balloon").unwrap().balloon_mib, Some(128));
    // The guest sees it: MemTotal drops by the 128 MiB the balloon holds.
    let total_kib = |log: &str| -> Vec<u64> {
        log.lines()
            .filter_map(|l| l.strip_prefix("MemTotal:"))
            .filter_map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .collect()
    };
    let before = total_kib(&env.wait_console("yun-balloon", "MemTotal"))[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(env.data().join("vm/machines/yun-balloon/console.log"))
            .unwrap_or_default();
        if total_kib(&log)
            .last()
            .is_some_and(|t| before - t >= 120 * 1024)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest MemTotal never dropped: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    d.balloon("yun-balloon", 256).unwrap();
    assert_eq!(d.stats("yun-balloon").unwrap().balloon_mib, Some(256));

    for bad in [0, 257] {
        let e = d.balloon("yun-balloon", bad).unwrap_err().to_string();
        assert!(e.contains("outside 1..=256"), "{e}");
    }
}

#[test]
fn a_vm_and_a_pod_share_the_bridge_network() {
    let env = Env::new();
    let id = std::process::id() % 100_000;
    let bridge = format!("yunvp{id}");
    let _bridge = Link::owned_by_yun(&bridge);
    let subnet = "10.213.95.0/24";
    // The node agent's side of the network, as it sets up a pod: a namespace on a veth pair.
    let pods =
        yun_net::BridgeNetwork::new(&bridge, subnet.parse().unwrap(), &env.data().join("net"))
            .unwrap();
    pods.ensure().unwrap();
    let ns = yun_net::netns::NamedNetns::create(&format!("yun-vp{id}"), true).unwrap();
    let pod = pods.attach("pod-uid-1", ns.path(), "eth0").unwrap();
    assert_eq!(pod.address.to_string(), "10.213.95.2/24");

    // The VM draws its address from the same pool and reaches the pod by IP.
    let mut cfg = env.config(
        "yun-podnet",
        "until ping -c 1 -W 1 10.213.95.2 >/dev/null; do sleep 0.2; done; echo reached-pod; \
         while true; do sleep 1; done",
    );
    cfg.join = Some(NetRequest {
        bridge: bridge.clone(),
        subnet: subnet.parse().unwrap(),
    });
    env.driver.define(&cfg).unwrap();
    let vm = env
        .driver
        .status("yun-podnet")
        .unwrap()
        .config
        .network
        .unwrap();
    assert_eq!(vm.address.to_string(), "10.213.95.3/24");
    env.driver.start("yun-podnet").unwrap();
    env.wait_console("yun-podnet", "reached-pod");
    env.driver.undefine("yun-podnet", true).unwrap();
    pods.detach("pod-uid-1").unwrap();
}

#[test]
fn vsock_exec_and_guest_to_host_connections() {
    let env = Env::new();
    let d = &env.driver;
    let mut cfg = env.config("yun-vsock", "echo booted; while true; do sleep 1; done");
    cfg.vsock = true;
    cfg.initrd = Some(common::vsock_initrd());
    d.define(&cfg).unwrap();
    d.define(&env.config("yun-novsock", "true")).unwrap();
    let e = d.exec("yun-vsock", "true", &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");
    let e = d.exec("yun-novsock", "true", &mut Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "vm yun-novsock: no vsock (create it with --vsock)"
    );

    // exec right after start: it waits for the booting guest's agent.
    d.start("yun-vsock").unwrap();
    let mut out = Vec::new();
    let status = d
        .exec("yun-vsock", "echo hi; echo err >&2; exit 3", &mut out)
        .unwrap();
    assert_eq!(status, 3);
    assert_eq!(String::from_utf8_lossy(&out), "hi\nerr\n");

    // A bigger output than one packet and the device's buffer, intact.
    let mut out = Vec::new();
    let status = d.exec("yun-vsock", "seq 1 200000", &mut out).unwrap();
    assert_eq!(status, 0);
    let want: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(out == want.as_bytes(), "{} bytes back", out.len());

    // Guest → host: a connection to host port 5000 reaches the listener at vsock.sock_5000.
    let dir = env.data().join("vm/machines/yun-vsock");
    let listener = std::os::unix::net::UnixListener::bind(dir.join("vsock.sock_5000")).unwrap();
    let host = std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let (mut c, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        c.write_all(b"pong\n").unwrap();
        line
    });
    let mut out = Vec::new();
    let status = d
        .exec("yun-vsock", "echo ping | yun-guest connect 5000", &mut out)
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(host.join().unwrap(), "ping\n");
    assert_eq!(String::from_utf8_lossy(&out), "pong\n");
    std::fs::remove_file(dir.join("vsock.sock_5000")).unwrap();
    // A guest port nobody listens on is refused at once.
    let e = yun_vmm::vsock::connect(&dir, 7777, Duration::from_secs(10)).unwrap_err();
    assert!(e.to_string().contains("nothing listens"), "{e}");

    let e = d.snapshot("yun-vsock", "s").unwrap_err().to_string();
    assert!(e.contains("cannot be snapshotted"), "{e}");

    d.stop("yun-vsock", false).unwrap();
    for f in ["vsock.sock", "vsock-vhost.sock"] {
        assert!(!dir.join(f).exists(), "{f} left behind");
    }
    assert!(processes_with(&dir.to_string_lossy()).is_empty());
}
