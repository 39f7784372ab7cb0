//! kube-rs (the Rust `kube` client) against a real `yun up` with its node agent: server-side
//! apply with field managers and a conflict, list and watch through `kube::runtime`, and exec
//! over WebSocket with stdout, stderr, stdin and the exit status.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, AttachParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::up::Up;

async fn client(up: &Up) -> Client {
    let kc = Kubeconfig::read_from(up.data.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

async fn read_all(r: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s).await.unwrap();
    }
    s
}

#[test]
fn kube_rs_applies_lists_watches_and_execs() {
    let up = Up::start("kubers");
    up.until(&["get", "nodes"], 30, |o| o.contains(" Ready"));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        tokio::time::timeout(Duration::from_secs(120), scenario(&up))
            .await
            .expect("the kube-rs scenario within 120 s")
    });
}

async fn scenario(up: &Up) {
    let client = client(up).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Server-side apply: two managers, a conflict naming the owner, then forced.
    let applied = |v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubers"}, "data": {"owner": v}})
    };
    let mine = PatchParams::apply("kube-rs-test");
    cms.patch("kubers", &mine, &Patch::Apply(applied("a")))
        .await
        .unwrap();
    cms.patch("kubers", &mine, &Patch::Apply(applied("b")))
        .await
        .unwrap();
    let theirs = PatchParams::apply("other-manager");
    let err = cms
        .patch("kubers", &theirs, &Patch::Apply(applied("c")))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409, "{s:?}");
            assert!(s.message.contains("kube-rs-test"), "{}", s.message);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let forced = cms
        .patch("kubers", &theirs.force(), &Patch::Apply(applied("c")))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["owner"], "c");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        ["other-manager"],
        "forcing took the field over: {:#?}",
        forced.metadata.managed_fields
    );

    // A watcher sees the pod it is waiting for; list finds it by label.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kubers-exec", "labels": {"app": "kubers"}},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}
    }))
    .unwrap();
    pods.patch("kubers-exec", &mine, &Patch::Apply(&pod))
        .await
        .unwrap();
    let mut seen = watcher::watcher(
        pods.clone(),
        watcher::Config::default().labels("app=kubers"),
    )
    .boxed();
    let first = seen.try_next().await.unwrap();
    assert!(first.is_some(), "the watcher answers");
    await_condition(pods.clone(), "kubers-exec", conditions::is_pod_running())
        .await
        .unwrap();
    let listed = pods
        .list(&ListParams::default().labels("app=kubers"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // exec: output on both streams and the exit status.
    let mut p = pods
        .exec(
            "kubers-exec",
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            &AttachParams::default().stderr(true),
        )
        .await
        .unwrap();
    let (out, err) = tokio::join!(read_all(p.stdout()), read_all(p.stderr()));
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(status.status.as_deref(), Some("Failure"), "{status:?}");
    let code = status
        .details
        .and_then(|d| d.causes)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message);
    assert_eq!(code.as_deref(), Some("3"));
    p.join().await.unwrap();

    // The runtime an exec starts runs from the agent's sealed copy of the binary (never the
    // file on the host, which a process in the container could reach through
    // /proc/PID/exe: CVE-2019-5736), and that copy cannot be written.
    let mut p = pods
        .exec(
            "kubers-exec",
            ["sleep", "5"],
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    let mut runtimes = Vec::new();
    for _ in 0..50 {
        runtimes = yunc_exec_processes();
        if !runtimes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!runtimes.is_empty(), "no yunc exec process seen");
    for pid in runtimes {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(
            exe.to_string_lossy().starts_with("/memfd:yunc"),
            "yunc exec {pid} runs from {}",
            exe.display()
        );
        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/exe"));
        assert!(write.is_err(), "the sealed copy opened for writing");
        // It is the agent's one copy (an open file of its parent, the agent), not a copy
        // this yunc made of itself.
        use std::os::unix::fs::MetadataExt;
        let exe = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap();
        let agent_holds = std::fs::read_dir(format!("/proc/{ppid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::metadata(fd.path()).ok())
            .any(|m| (m.dev(), m.ino()) == (exe.dev(), exe.ino()));
        assert!(
            agent_holds,
            "yunc {pid} does not run from its parent's sealed copy"
        );
    }
    drop(p.stdout());
    let _ = p.take_status().unwrap().await;
    p.join().await.unwrap();

    // exec with stdin: what is written comes back, and end of input ends the command.
    let mut p = pods
        .exec(
            "kubers-exec",
            ["sh", "-c", "tr a-z A-Z"],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await
        .unwrap();
    let mut stdin = p.stdin().unwrap();
    stdin.write_all(b"through kube-rs\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    drop(stdin);
    let out = read_all(p.stdout()).await;
    let status = p.take_status().unwrap().await.unwrap();
    assert_eq!(out, "THROUGH KUBE-RS\n");
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
    p.join().await.unwrap();
}

/// Host pids of the `yunc … exec` processes running now.
fn yunc_exec_processes() -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first() == Some(&&b"yunc"[..]) && args.contains(&&b"exec"[..]) {
            out.push(pid);
        }
    }
    out
}
