//! The streaming subresources through `yun up` with today's kubectl (1.33, WebSocket
//! `v5.channel.k8s.io`): exec's exit code, separate stdout and stderr, piped stdin, a tty
//! with its size, `kubectl cp` both ways, kube's errors, `run -i --rm` (attach), and a
//! client that goes away taking its process with it; port-forward with kubectl 1.33 (SPDY
//! tunneled in a WebSocket), 1.27 and 1.20 (SPDY); exec and attach over SPDY with 1.27 and
//! 1.20.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::up::Up;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// A kubectl port-forward, killed on drop.
struct Forward(std::process::Child);

impl Forward {
    /// What it wrote on stderr (after it ended).
    fn stderr_text(&mut self) -> String {
        use std::io::Read;
        let _ = self.0.kill();
        let _ = self.0.wait();
        let mut s = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl133(up: &Up, args: &[&str]) -> Command {
    let mut c = Command::new(KUBECTL_133);
    c.arg("--kubeconfig")
        .arg(up.data.join("kubeconfig"))
        .args(args);
    c
}

fn run133(up: &Up, args: &[&str]) -> Output {
    kubectl133(up, args).output().expect("run kubectl 1.33")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Host processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .as_deref()
                == Some(&want[..])
        })
        .collect()
}

fn wait_until(what: &str, secs: u64, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn kubectl_exec_attach_cp_tty_and_port_forward() {
    assert!(Path::new(KUBECTL_133).exists(), "kubectl 1.33 is missing");
    let up = Up::start("streams");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&["run", "idle", "--image=busybox", "--", "sleep", "3600"]);
    up.until(&["get", "pod", "idle"], 40, |o| o.contains("Running"));

    // The exit code comes back through the status channel; stdout and stderr stay apart.
    let out = run133(
        &up,
        &[
            "exec",
            "idle",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).starts_with("err\n"),
        "{}",
        text(&out.stderr)
    );

    // Stdin is delivered and its end reaches the process (v5's close signal).
    let mut child = kubectl133(&up, &["exec", "-i", "idle", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hi\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "hi\n");

    // -it under a pty (script gives kubectl one): a tty inside, with kubectl's size (sent
    // on the resize channel once the session is up, hence the pause).
    for kubectl in [KUBECTL_133, KUBECTL_127, common::kubectl::KUBECTL] {
        let cmd = format!(
            "stty cols 123 rows 45; {kubectl} --kubeconfig {} exec -it idle -- sh -c 'tty; sleep 0.5; stty size; exit 4'",
            up.data.join("kubeconfig").display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let shown = text(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{kubectl}: {shown}");
        assert!(shown.contains("/dev/pts/"), "{kubectl}: {shown}");
        assert!(shown.contains("45 123"), "{kubectl}: {shown}");
    }

    // kubectl 1.27 and 1.20 exec over SPDY/3.1 (v4.channel.k8s.io): the same exit code,
    // separate streams and stdin.
    for kubectl in [KUBECTL_127, common::kubectl::KUBECTL] {
        let mut c = Command::new(kubectl);
        c.arg("--kubeconfig").arg(up.data.join("kubeconfig"));
        let out = c
            .args([
                "exec",
                "idle",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "{kubectl}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "out\n", "{kubectl}");
        assert!(
            text(&out.stderr).starts_with("err\n"),
            "{kubectl}: {}",
            text(&out.stderr)
        );
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(up.data.join("kubeconfig"))
            .args(["exec", "-i", "idle", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"spdy-in\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(text(&out.stdout), "spdy-in\n", "{kubectl}");
    }

    // kubectl cp both ways (exec + tar).
    let dir = TempDir(std::env::temp_dir().join(format!("yun-test-cp-{}", std::process::id())));
    let src = dir.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("f.txt"), "payload\n").unwrap();
    let out = run133(&up, &["cp", src.to_str().unwrap(), "idle:/tmp/dst"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run133(&up, &["exec", "idle", "--", "cat", "/tmp/dst/f.txt"]);
    assert_eq!(text(&out.stdout), "payload\n");
    let back = dir.0.join("back");
    let out = run133(&up, &["cp", "idle:/tmp/dst", back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(back.join("big.bin")).unwrap(), big);

    // Kube's errors for a missing pod and a container the pod does not have.
    let out = run133(&up, &["exec", "nope", "--", "true"]);
    assert!(
        text(&out.stderr).contains("pods \"nope\" not found"),
        "{}",
        text(&out.stderr)
    );
    let out = run133(&up, &["exec", "idle", "-c", "bad", "--", "true"]);
    assert!(
        text(&out.stderr).contains("container bad is not valid for pod idle"),
        "{}",
        text(&out.stderr)
    );

    // run -i --rm: attach delivers stdin to the main process (stdin: true, stdinOnce: its end
    // is the container's end of file), its stdout and stderr come back apart, kubectl exits
    // with the container's code and removes the pod. 1.33 attaches over WebSocket, 1.27 and
    // 1.20 over SPDY.
    for (kubectl, pod) in [
        (KUBECTL_133, "once-133"),
        (KUBECTL_127, "once-127"),
        (common::kubectl::KUBECTL, "once-120"),
    ] {
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(up.data.join("kubeconfig"))
            .args(["run", "-i", "--rm", "--restart=Never", pod])
            .args(["--image=busybox", "--", "sh"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(b"echo from-stdin; echo to-stderr >&2; exit 5\n")
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let said = format!("{kubectl}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(5), "{said}");
        assert!(text(&out.stdout).starts_with("from-stdin\n"), "{said}");
        assert!(text(&out.stderr).contains("to-stderr"), "{said}");
        up.until(&["get", "pods", "-o", "name"], 30, |o| {
            !o.contains(&format!("pod/{pod}\n"))
        });
    }

    // run -it --rm: the pod gets a terminal (tty: true); kubectl attaches to it under a pty
    // of its own (script), sends its size and what is typed, and exits with the container's
    // code. 1.33 over WebSocket, 1.27 and 1.20 over SPDY.
    for (kubectl, pod) in [
        (KUBECTL_133, "tty-133"),
        (KUBECTL_127, "tty-127"),
        (common::kubectl::KUBECTL, "tty-120"),
    ] {
        let cmd = format!(
            "stty cols 123 rows 45; {kubectl} --kubeconfig {} run -it --rm --restart=Never {pod} --image=busybox -- sh",
            up.data.join("kubeconfig").display()
        );
        // Typed after a moment (input typed before the attach waits in script's terminal);
        // script's input stays open until the shell has exited.
        let mut child = Command::new("timeout")
            .args(["60", "script", "-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            std::thread::sleep(std::time::Duration::from_secs(2));
            let _ = input.write_all(b"tty; stty size; echo typed-$((6*7)); exit 6\n");
            std::thread::sleep(std::time::Duration::from_secs(60));
        });
        let out = child.wait_with_output().unwrap();
        let shown = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(6),
            "{kubectl}: {shown}{}",
            text(&out.stderr)
        );
        assert!(shown.contains("typed-42"), "{kubectl}: {shown}");
        assert!(shown.contains("/dev/pts/"), "{kubectl}: {shown}");
        assert!(shown.contains("45 123"), "{kubectl}: {shown}");
        up.until(&["get", "pods", "-o", "name"], 30, |o| {
            !o.contains(&format!("pod/{pod}\n"))
        });
    }

    // port-forward to a server bound to the pod's loopback: kubectl 1.33 tunnels SPDY in a
    // WebSocket, 1.27 and 1.20 speak SPDY; curl goes through each. A closed port is reported.
    up.ok(&[
        "run",
        "web",
        "--image=busybox",
        "--",
        "sh",
        "-c",
        "mkdir /www && echo hello-pf > /www/index.html && httpd -f -p 127.0.0.1:8080 -h /www",
    ]);
    up.until(&["get", "pod", "web"], 40, |o| o.contains("Running"));
    for kubectl in [KUBECTL_133, KUBECTL_127, common::kubectl::KUBECTL] {
        let local = common::free_port();
        let mut pf = Forward(
            Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(up.data.join("kubeconfig"))
                .args(["port-forward", "pod/web", &format!("{local}:8080")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        common::wait_for_port(&format!("127.0.0.1:{local}"), "kubectl port-forward");
        let url = format!("http://127.0.0.1:{local}/");
        for _ in 0..2 {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "10", &url])
                .output()
                .unwrap();
            assert_eq!(text(&out.stdout), "hello-pf\n", "{kubectl}");
        }
        let _ = pf.0.kill();
    }
    let local = common::free_port();
    let mut pf = Forward(
        kubectl133(&up, &["port-forward", "pod/web", &format!("{local}:9999")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    common::wait_for_port(&format!("127.0.0.1:{local}"), "kubectl port-forward");
    let _ = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{local}/"),
        ])
        .output();
    // kubectl ≥ 1.29 ends a port-forward whose remote side failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pf.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = pf.stderr_text();
    assert!(out.contains("dial tcp4 127.0.0.1:9999"), "{out}");

    // A client that goes away takes its process with it, with and without a tty.
    let kubeconfig = up.data.join("kubeconfig");
    for tty in [false, true] {
        let secs = if tty { "1235" } else { "1234" };
        // With a tty, kubectl needs one of its own: it runs under script.
        let exec = format!(
            "{KUBECTL_133} --kubeconfig {} exec {} idle -- sleep {secs}",
            kubeconfig.display(),
            if tty { "-it" } else { "" }
        );
        // What kubectl prints (through script's pty) is kept, to say why if it never starts.
        let transcript = up.data.join(format!("exec-{secs}.out"));
        let mut wrapper = Command::new("script")
            .args(["-qec", &exec, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&transcript).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes(&["sleep", secs]).is_empty() {
            if Instant::now() > deadline || wrapper.try_wait().unwrap().is_some() {
                let _ = wrapper.kill();
                let ended = wrapper.wait().unwrap();
                panic!(
                    "the exec'd process (tty {tty}) did not start within 30 s; kubectl {ended}, \
                     printed: {:?}",
                    std::fs::read_to_string(&transcript).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid = wrapper.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        for kubectl in children.split_whitespace() {
            let _ = Command::new("kill").args(["-9", kubectl]).status();
        }
        wrapper.wait().unwrap();
        wait_until("the exec'd process is gone", 10, || {
            processes(&["sleep", secs]).is_empty()
        });
    }
}

#[test]
fn pods_and_services_proxy_http() {
    let up = Up::start("proxy");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    up.ok(&[
        "run",
        "site",
        "--image=busybox",
        "--port=8080",
        "--",
        "sh",
        "-c",
        "mkdir /www && echo hello-proxy > /www/index.html && httpd -f -p 8080 -h /www",
    ]);
    up.until(&["get", "pod", "site"], 40, |o| o.contains("Running"));
    up.ok(&["expose", "pod", "site", "--port=80", "--target-port=8080"]);
    // The server needs a moment after Running; the endpoint a moment after the Service.
    let get = |path: &str| up.until(&["get", "--raw", path], 30, |o| o.contains("hello-proxy"));
    get("/api/v1/namespaces/default/pods/site:8080/proxy/");
    get("/api/v1/namespaces/default/pods/site:8080/proxy/index.html");
    get("/api/v1/namespaces/default/services/site/proxy/");
    get("/api/v1/namespaces/default/services/site:80/proxy/index.html");
    // kubectl 1.33's own verb on top of it.
    let out = run133(
        &up,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/site:8080/proxy/",
        ],
    );
    assert_eq!(text(&out.stdout), "hello-proxy\n", "{}", text(&out.stderr));
    // A missing pod is 404; a closed port is 503 naming the pod.
    let out = up.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/nope/proxy/",
    ]);
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = up.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/site:9999/proxy/",
    ]);
    assert!(
        text(&out.stderr).contains("ServiceUnavailable")
            || text(&out.stderr).contains("error trying to reach pods/site"),
        "{}",
        text(&out.stderr)
    );
}
