//! `yun run` and friends against a private data dir: images become overlay roots, containers
//! run, log, exec, stop and go away without leaving mounts or cgroups.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

/// A data dir of its own; on drop every container is force-removed and the dir deleted.
struct Yun {
    data: PathBuf,
}

impl Yun {
    fn new(name: &str) -> Yun {
        let data = PathBuf::from(format!("/tmp/yun-test-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        Yun { data }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(YUN);
        c.arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn yun(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and insist on success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.yun(args);
        assert!(
            out.status.success(),
            "yun {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// For commands that leave a container running: no captured pipes.
    fn detached(&self, args: &[&str]) -> String {
        let out = self.cmd(args).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "yun {}", args.join(" "));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Yun {
    fn drop(&mut self) {
        let out = self.yun(&["ps", "-a", "-q"]);
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = self.yun(&["rm", "-f", id]);
        }
        unmount_under(&[&self.data]);
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// No mount under the data dir but the store's own: `snapshots`, bound onto itself
/// nosuid,nodev for as long as the data dir exists.
fn no_mounts_under(data: &std::path::Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let data = data.to_str().unwrap();
    let snapshots = format!("{data}/snapshots");
    let left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(data) && *m != snapshots)
        .collect();
    assert!(left.is_empty(), "mounts left under {data}: {left:?}");
}

#[test]
fn run_rm_prints_and_leaves_nothing() {
    let y = Yun::new("rm");
    let out = y.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo hello from $(hostname); cat /etc/hostname",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], format!("hello from {}", lines[1]));
    assert_eq!(y.ok(&["ps", "-a", "-q"]), "");
    no_mounts_under(&y.data);
    let out = y.yun(&["run", "--rm", "busybox", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn image_config_and_flags_shape_the_process() {
    let y = Yun::new("flags");
    let host = PathBuf::from(format!("/tmp/yun-test-vol-{}", std::process::id()));
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from-host\n").unwrap();
    let vol = format!("{}:/data:ro", host.display());
    let out = y.ok(&[
        "run", "--rm", "-e", "YUN_A=1", "-w", "/tmp", "-u", "yun", "-v", &vol, "-m", "32m", "--cpus", "0.5", "busybox", "sh", "-c",
        "echo $YUN_A; pwd; id -un; cat /data/f; touch /data/g 2>&1 | grep -c Read-only; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    ]);
    let _ = std::fs::remove_dir_all(&host);
    assert_eq!(out, "1\n/tmp\nyun\nfrom-host\n1\n33554432\n50000\n");
    for detach in [&[][..], &["-d"][..]] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(detach);
        args.extend_from_slice(&["busybox", "/yun-no-such-program"]);
        let out = y.yun(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("yun-no-such-program"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let err = y.yun(&["run", "--rm", "-u", "nobody-at-all", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("unable to find user nobody-at-all"));
    assert_eq!(
        y.ok(&["ps", "-a", "-q"]),
        "",
        "a failed run left a container"
    );
}

#[test]
fn detached_container_lifecycle() {
    let y = Yun::new("life");
    let id = y.detached(&[
        "run",
        "-d",
        "--name",
        "yun-web",
        "busybox",
        "sh",
        "-c",
        "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
    ]);
    assert_eq!(id.len(), 64, "{id}");
    let ps = y.ok(&["ps"]);
    assert!(ps.contains("yun-web") && ps.contains("Up"), "{ps}");
    assert_eq!(
        y.ok(&["exec", "yun-web", "sh", "-c", "echo in-$(hostname)"]),
        format!("in-{}\n", &id[..12])
    );
    assert_eq!(
        y.yun(&["exec", "yun-web", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    let dup = y.yun(&["run", "-d", "--name", "yun-web", "busybox", "true"]);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already in use"));
    let refused = y.yun(&["rm", "yun-web"]);
    assert!(!refused.status.success());
    let rmi = y.yun(&["rmi", "busybox"]);
    assert!(
        String::from_utf8_lossy(&rmi.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&rmi.stderr)
    );
    y.ok(&["stop", "-t", "5", "yun-web"]);
    assert!(y.ok(&["ps", "-a"]).contains("Exited (0)"));
    assert_eq!(y.ok(&["logs", "yun-web"]), "started\nbye\n");
    // An exited container keeps its log and record, not its rootfs mount (as podman), and
    // its image stays in use.
    no_mounts_under(&y.data);
    assert!(String::from_utf8_lossy(&y.yun(&["rmi", "busybox"]).stderr).contains("in use"));
    y.ok(&["rm", "yun-web"]);
    assert_eq!(y.ok(&["ps", "-a", "-q"]), "");
    no_mounts_under(&y.data);
    assert!(cgroup_dirs_named(&id).is_empty());
    y.ok(&["rmi", "busybox"]);
    assert!(!y.ok(&["images"]).contains("busybox"));
}

/// A detached container with a terminal (`run -d -t`): its terminal's output is logged (a
/// terminal has one stream, and ends lines with \r\n), and it ends with its code.
#[test]
fn a_detached_terminal_is_logged() {
    let y = Yun::new("dtty");
    y.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "yun-tty",
        "busybox",
        "sh",
        "-c",
        "tty; echo bye; sleep 4; exit 7",
    ]);
    // While it runs: the terminal's master is handed to a client of attach.sock that root
    // runs; the host's nobody cannot even reach the socket.
    let socket = find_file(&y.data, "attach.sock").expect("the terminal's attach.sock");
    let dir = socket.parent().unwrap().to_str().unwrap().to_string();
    let receive = "import os, socket, sys\n\
        os.chdir(sys.argv[1])\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect('attach.sock')\n\
        _, anc, _, _ = s.recvmsg(16, socket.CMSG_LEN(4))\n\
        print('fds', len(anc))\n";
    let root = Command::new("python3")
        .args(["-c", receive, &dir])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&root.stdout), "fds 1\n");
    let nobody = as_nobody(&["python3", "-c", receive, &dir]);
    assert!(!nobody.status.success());
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !y.ok(&["ps", "-a"]).contains("Exited (7)") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            y.ok(&["ps", "-a"])
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let logs = y.ok(&["logs", "yun-tty"]);
    assert!(logs.starts_with("/dev/pts/0\r\nbye\r\n"), "{logs:?}");
    y.ok(&["rm", "yun-tty"]);
}

#[test]
fn stop_kills_what_ignores_sigterm_and_logs_follow() {
    let y = Yun::new("stop");
    y.detached(&["run", "-d", "--name", "yun-deaf", "busybox", "sleep", "100"]);
    let start = std::time::Instant::now();
    y.ok(&["stop", "-t", "1", "yun-deaf"]);
    assert!(start.elapsed() < std::time::Duration::from_secs(8));
    assert!(y.ok(&["ps", "-a"]).contains("Exited (137)"));
    y.detached(&[
        "run",
        "-d",
        "--name",
        "yun-count",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo $i; sleep 0.2; done",
    ]);
    assert_eq!(y.ok(&["logs", "-f", "yun-count"]), "1\n2\n3\n");
    y.detached(&["run", "-d", "--rm", "--name", "yun-gone", "busybox", "true"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while y.ok(&["ps", "-a"]).contains("yun-gone") {
        assert!(
            std::time::Instant::now() < deadline,
            "--rm container not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A container that writes without end costs the node a bounded amount of disk: its log is
/// rotated at --log-opt max-size with max-file files kept, and a reader following it across
/// the rotations misses no line.
#[test]
fn a_chatty_log_is_rotated_and_follow_misses_nothing() {
    let y = Yun::new("logrot");
    let id = y.detached(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=256Ki",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        // ~1.7 MB in bursts, after a pause that lets the follower start first.
        "sleep 1; i=0; while [ $i -lt 40000 ]; do echo line-$i; i=$((i+1)); \
         [ $((i % 2000)) = 0 ] && sleep 0.1; done; true",
    ]);
    let followed = y.ok(&["logs", "-f", &id]);
    let want: String = (0..40000).map(|i| format!("line-{i}\n")).collect();
    assert!(
        followed == want,
        "follow lost or reordered lines across rotations"
    );
    let dir = y.data.join("containers").join(&id);
    let mut logs: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ctr.log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    logs.sort();
    let names: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ctr.log", "ctr.log.1", "ctr.log.2"]);
    for (name, len) in &logs {
        assert!(*len <= 256 * 1024, "{name} is {len} bytes, over max-size");
    }
    // Without -f: the current file, as kubectl logs reads a kubelet's.
    let now = y.ok(&["logs", &id]);
    assert!(now.ends_with("line-39999\n") && !now.starts_with("line-0\n"));
    let bad = y.yun(&["run", "--log-opt", "max-size=1k", "busybox", "true"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("minimum"), "{err}");
}

#[test]
fn tag_save_load_round_trip() {
    let y = Yun::new("saveload");
    y.ok(&["run", "--rm", "busybox", "true"]);
    y.ok(&["tag", "busybox", "yun-test/mine:v1"]);
    let images = y.ok(&["images"]);
    assert!(
        images.contains("yun-test/mine") && images.contains("v1"),
        "{images}"
    );
    let archive = y.data.join("saved.tar");
    y.ok(&["save", "-o", archive.to_str().unwrap(), "yun-test/mine:v1"]);
    let y2 = Yun::new("saveload2");
    let out = y2.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("yun-test/mine:v1"), "{out}");
    assert_eq!(
        y2.ok(&["run", "--rm", "yun-test/mine:v1", "echo", "loaded"]),
        "loaded\n"
    );
}

fn blob_count(data: &std::path::Path) -> usize {
    std::fs::read_dir(data.join("images/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn build_runs_steps_caches_and_whiteouts_hide_files() {
    let y = Yun::new("build");
    let ctx = y.data.join("ctx");
    std::fs::create_dir_all(ctx.join("site")).unwrap();
    std::fs::write(ctx.join("site/index.html"), "hello site\n").unwrap();
    std::fs::write(ctx.join("notes.txt"), "notes\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nARG GREETING=hi\nENV GREETING=$GREETING\nRUN mkdir -p /opt/app && echo built > /opt/app/marker && echo temp > /opt/app/gone\nCOPY site /srv/www\nCOPY notes.txt /opt/app/\nRUN rm /opt/app/gone\nWORKDIR /opt/app\nUSER yun\nCMD [\"sh\", \"-c\", \"echo $GREETING; pwd; id -un; cat marker notes.txt /srv/www/index.html; ls\"]\n",
    )
    .unwrap();
    let out = y.ok(&[
        "build",
        "-t",
        "yun-test/app:1",
        "--build-arg",
        "GREETING=hello",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.contains("STEP 4/10") && out.contains("COMMIT"), "{out}");
    let run = y.ok(&["run", "--rm", "yun-test/app:1"]);
    assert_eq!(
        run, "hello\n/opt/app\nyun\nbuilt\nnotes\nhello site\nmarker\nnotes.txt\n",
        "the deleted file must be hidden by its whiteout"
    );

    let blobs = blob_count(&y.data);
    let again = y.ok(&[
        "build",
        "-t",
        "yun-test/app:1",
        "--build-arg",
        "GREETING=hello",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(again.matches("Using cache").count(), 4, "{again}");
    assert_eq!(
        blob_count(&y.data),
        blobs,
        "an unchanged rebuild wrote new blobs"
    );

    std::fs::write(ctx.join("notes.txt"), "changed\n").unwrap();
    let changed = y.ok(&[
        "build",
        "-t",
        "yun-test/app:2",
        "--build-arg",
        "GREETING=hello",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(
        changed.matches("Using cache").count(),
        2,
        "only the steps before the changed COPY hit: {changed}"
    );
    assert!(y.ok(&["run", "--rm", "yun-test/app:2"]).contains("changed"));
}

#[test]
fn multi_stage_build_copies_from_a_stage_and_chowns_by_name() {
    let y = Yun::new("stages");
    let ctx = y.data.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM busybox AS build\nRUN mkdir /out && echo 'echo from the build stage' > /out/hello.sh && echo junk > /out/junk\nFROM busybox\nCOPY --from=build --chown=yun /out/hello.sh /app/\nCOPY --from=0 --chown=nobody:yun /out/junk /app/junk\nCMD [\"sh\", \"-c\", \"sh /app/hello.sh; stat -c '%u:%g' /app/hello.sh /app/junk; test -e /out || echo no-out\"]\n",
    )
    .unwrap();
    let out = y.ok(&["build", "-t", "yun-test/stages", ctx.to_str().unwrap()]);
    assert!(out.contains("STEP 5/6"), "{out}");
    assert_eq!(
        y.ok(&["run", "--rm", "yun-test/stages"]),
        "from the build stage\n1000:1000\n65534:1000\nno-out\n",
        "the final image holds the copied files with their new owners and nothing else of the build stage"
    );
    let blobs = blob_count(&y.data);
    let again = y.ok(&["build", "-t", "yun-test/stages", ctx.to_str().unwrap()]);
    assert_eq!(again.matches("Using cache").count(), 3, "{again}");
    assert_eq!(
        blob_count(&y.data),
        blobs,
        "an unchanged rebuild wrote new blobs"
    );

    std::fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nCOPY --from=nosuchstage /x /y\n",
    )
    .unwrap();
    let out = y.yun(&["build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--from=nosuchstage: no such stage or image"),
        "{err}"
    );
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nCOPY --chown=nosuchuser Containerfile /x\n",
    )
    .unwrap();
    let out = y.yun(&["build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unable to find user nosuchuser"),
        "{err}"
    );
    no_mounts_under(&y.data);
}

#[test]
fn build_errors_name_the_step() {
    let y = Yun::new("builderr");
    let ctx = y.data.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Containerfile"), "FROM busybox\nRUN exit 3\n").unwrap();
    let out = y.yun(&["build", "-t", "yun-test/bad", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("Containerfile:2: RUN exit 3")
            && err.contains("exited with 3"),
        "{err}"
    );
    std::fs::write(ctx.join("Containerfile"), "FROM busybox\nCOPY missing /x\n").unwrap();
    let out = y.yun(&["build", ctx.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing: not found in the build context")
    );
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nCOPY ../../../etc/passwd /x\n",
    )
    .unwrap();
    let out = y.yun(&["build", ctx.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the build context"));
    no_mounts_under(&y.data);
}

#[test]
fn add_unpacks_local_archives_and_prune_keeps_what_is_used() {
    let y = Yun::new("addprune");
    let ctx = y.data.join("ctx");
    std::fs::create_dir_all(ctx.join("payload/sub")).unwrap();
    std::fs::write(ctx.join("payload/sub/file.txt"), "inside the archive\n").unwrap();
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(ctx.join("payload.tgz"))
        .arg("-C")
        .arg(ctx.join("payload"))
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::write(ctx.join("Containerfile"), "FROM busybox\nADD payload.tgz /opt/added/\nRUN echo step > /step\nCMD [\"cat\", \"/opt/added/sub/file.txt\", \"/step\"]\n").unwrap();
    y.ok(&["build", "-t", "yun-test/added:1", ctx.to_str().unwrap()]);
    assert_eq!(
        y.ok(&["run", "--rm", "yun-test/added:1"]),
        "inside the archive\nstep\n"
    );
    let before = blob_count(&y.data);
    let out = y.ok(&["prune"]);
    assert!(out.contains("Removed"), "{out}");
    assert!(
        blob_count(&y.data) < before,
        "the build intermediates' config and manifest blobs stay"
    );
    // What is named still runs.
    assert_eq!(
        y.ok(&["run", "--rm", "yun-test/added:1"]),
        "inside the archive\nstep\n"
    );
}

#[test]
fn a_full_disk_leaves_the_store_consistent() {
    let y = Yun::new("fulldisk");
    std::fs::create_dir_all(&y.data).unwrap();
    // 3 MiB: the 2.1 MB busybox layer blob fits, unpacking it as well does not.
    let small = nix::mount::mount(
        Some("tmpfs"),
        &y.data,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=3m"),
    );
    small.unwrap();
    let out = y.yun(&["run", "--rm", "busybox", "echo", "fits"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("No space left on device"),
        "{err}"
    );
    // Nothing half-written where the store looks: blob names are whole digests, and no
    // half-unpacked layer sits in the layer directory.
    for e in std::fs::read_dir(y.data.join("images/blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()),
            "stray {name}"
        );
    }
    if let Ok(layers) = std::fs::read_dir(y.data.join("snapshots/layers")) {
        for l in layers.flatten() {
            assert!(
                !l.file_name().to_string_lossy().starts_with('.') || !l.path().join("fs").exists(),
                "half layer {:?}",
                l.path()
            );
        }
    }
    assert_eq!(
        y.ok(&["ps", "-a", "-q"]),
        "",
        "a failed run left a container"
    );
    // With room again, the same command works from the store as it was left.
    nix::mount::mount(
        None::<&str>,
        &y.data,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT,
        Some("size=64m"),
    )
    .unwrap();
    assert_eq!(y.ok(&["run", "--rm", "busybox", "echo", "fits"]), "fits\n");
    assert!(y.ok(&["images"]).contains("busybox"));
    drop(y); // unmounts the tmpfs (a mount under the data dir) and removes it
}

#[test]
fn run_with_a_terminal() {
    let y = Yun::new("tty");
    let cmd = format!(
        "{YUN} --data-dir {} run --rm -t busybox sh -c 'tty; echo tty-ok'",
        y.data.display()
    );
    let (ok, text) = in_terminal(&cmd);
    assert!(ok, "{text}");
    assert!(
        text.contains("/dev/pts/0") && text.contains("tty-ok"),
        "{text:?}"
    );
}

#[test]
fn a_default_seccomp_profile_unless_unconfined() {
    let y = Yun::new("seccomp");
    let mode = "grep '^Seccomp:' /proc/self/status";
    assert_eq!(
        y.ok(&["run", "--rm", "busybox", "sh", "-c", mode]),
        "Seccomp:\t2\n"
    );
    assert_eq!(
        y.ok(&[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            "busybox",
            "sh",
            "-c",
            mode
        ]),
        "Seccomp:\t0\n"
    );
    let out = y.yun(&[
        "run",
        "--rm",
        "--security-opt",
        "apparmor=x",
        "busybox",
        "true",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("only seccomp=unconfined"));
}

/// The first file named `name` under `dir`.
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// `args` run as the host's `nobody`. Through a shell: setpriv itself still holds root's
/// capabilities when it execs (the exec's path walk would pass 0700 dirs), the shell it
/// starts holds none.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An image made by Python's tarfile holds a setuid-root program (built by gcc: it prints
/// its effective uid) and device nodes anyone may open (c 1:11, b 254:0). Unpacked on the
/// host they are out of `nobody`'s reach (data dir 0710, content dirs 0700), and even with
/// those modes loosened they are dead (the snapshots mount is nosuid,nodev). In the image's
/// own container the program still runs as root: the container's root mount decides.
#[test]
fn setuid_files_and_devices_from_images_are_dead_on_the_host() {
    let y = Yun::new("suid");
    let src = y.data.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("euid.c"),
        "#include <stdio.h>\n#include <unistd.h>\nint main(void){printf(\"euid=%d\\n\",(int)geteuid());return 0;}\n",
    )
    .unwrap();
    let cc = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(src.join("yun-euid"))
        .arg(src.join("euid.c"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let archive = src.join("suid.tar");
    let bin = src.join("yun-euid");
    images_py(&[
        "archive",
        "suid",
        archive.to_str().unwrap(),
        "--suid",
        bin.to_str().unwrap(),
    ]);
    y.ok(&["load", "-i", archive.to_str().unwrap()]);

    // Unpacked faithfully, at load.
    let layers = y.data.join("snapshots/layers");
    let fs_dir = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("fs"))
        .find(|p| p.join("usr/bin/yun-euid").exists())
        .expect("the layer is unpacked at load");
    let prog = fs_dir.join("usr/bin/yun-euid");
    let md = std::fs::metadata(&prog).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o4755, 0));
    let kmsg = fs_dir.join("devs/kmsg");
    let vda = fs_dir.join("devs/vda");
    assert!(std::fs::symlink_metadata(&kmsg)
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(std::fs::symlink_metadata(&vda)
        .unwrap()
        .file_type()
        .is_block_device());
    let open = |dev: &std::path::Path| {
        as_nobody(&["/bin/sh", "-c", &format!("exec 3< {}", dev.display())])
    };
    let (p, k, v) = (prog.to_str().unwrap(), &kmsg, &vda);

    // As nobody: nothing under the data dir can even be named.
    let run = as_nobody(&[p]);
    assert!(
        !run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(!String::from_utf8_lossy(&run.stdout).contains("euid=0"));
    assert!(!open(k).status.success() && !open(v).status.success());
    assert!(!as_nobody(&["ls", y.data.to_str().unwrap()])
        .status
        .success());
    let records = y.data.join("images/images.json");
    assert!(!as_nobody(&["cat", records.to_str().unwrap()])
        .status
        .success());

    // Modes loosened on the whole way down (an admin's chmod, a copy made by an old yun):
    // the setuid bit gives nothing and the devices do not open.
    let chain = fs_dir.parent().unwrap();
    let way = [
        &y.data,
        &y.data.join("snapshots"),
        &layers,
        &chain.to_path_buf(),
    ];
    for d in way {
        chmod(d, 0o755);
    }
    let run = as_nobody(&[p]);
    let open_k = open(k);
    let open_v = open(v);
    chmod(&y.data, 0o710);
    chmod(&y.data.join("snapshots"), 0o700);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "euid=65534\n");
    for o in [open_k, open_v] {
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
            "{o:?}"
        );
    }

    // In its container the image works as made.
    let out = y.ok(&[
        "run",
        "--rm",
        "--user",
        "65534",
        "localhost/yun-test-suid:v1",
    ]);
    assert_eq!(out, "euid=0\n");
}

/// `--user` ids outside 0..=2^31-1 (negative ones too) are refused before the container
/// exists, with one line naming `--user`; an image whose config has such a `User` likewise.
#[test]
fn user_ids_outside_the_range_are_refused() {
    let y = Yun::new("userid");
    for u in ["4294967295", "-1", "0:4294967295", "2147483648"] {
        let out = y.yun(&["run", "--rm", "--user", u, "busybox", "true"]);
        assert_fails_with(&out, &format!("--user {u:?}: "));
        assert!(String::from_utf8_lossy(&out.stderr).contains("is out of range (0 to 2147483647)"));
    }
    assert_eq!(y.ok(&["ps", "-a", "-q"]), "");
    assert_eq!(
        y.ok(&["run", "--rm", "--user", "2147483647", "busybox", "id", "-u"]),
        "2147483647\n"
    );
    // The image's own User field.
    let ctx = y.data.join("ctx-user");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Containerfile"), "FROM busybox\nUSER 4294967295\n").unwrap();
    y.ok(&[
        "build",
        "-t",
        "localhost/yun-test-baduser:1",
        ctx.to_str().unwrap(),
    ]);
    let out = y.yun(&["run", "--rm", "localhost/yun-test-baduser:1", "true"]);
    assert_fails_with(
        &out,
        "the image config's User \"4294967295\": uid 4294967295 is out of range",
    );
    assert_eq!(y.ok(&["ps", "-a", "-q"]), "");
    let containers: Vec<_> = std::fs::read_dir(y.data.join("snapshots/containers"))
        .unwrap()
        .collect();
    assert!(containers.is_empty(), "{containers:?}");
    no_mounts_under(&y.data);
}
