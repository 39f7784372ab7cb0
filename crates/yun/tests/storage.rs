//! Persistent volumes through `yun up` with real containers and loop devices, driven by
//! kubectl 1.33 (and 1.20 for the tables): local-path-provisioner's stock example (a claim
//! with no class and a pod) binds on first use, the data outlives the pod, the size is
//! enforced (ENOSPC), the claim grows, a Block claim is a device in the pod, a StatefulSet
//! gets a claim per ordinal, a static hostPath volume binds and is retained; bad claims wait
//! with the reason in an event; nothing is left mounted or attached.

mod common;

use std::time::{Duration, Instant};

use common::kubectl::{text, Kubectl133};
use common::up::Up;
use serde_json::Value;

const CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: local-path-pvc}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
"#;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: volume-test}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: v, mountPath: /data}]
  volumes:
  - name: v
    persistentVolumeClaim: {claimName: local-path-pvc}
"#;

fn wait(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn apply(up: &Up, k: &Kubectl133, name: &str, yaml: &str) {
    let file = up.data.join(name);
    std::fs::write(&file, yaml).unwrap();
    k.ok(&["apply", "-f", file.to_str().unwrap()]);
}

fn phase(k: &Kubectl133, what: &str) -> String {
    let out = k.run(&["get", what, "-o", "jsonpath={.status.phase}"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The messages of the events about `name` with `reason`.
fn events(k: &Kubectl133, name: &str, reason: &str) -> Vec<String> {
    let list = k.json(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name},reason={reason}"),
    ]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

fn exec(k: &Kubectl133, pod: &str, script: &str) -> std::process::Output {
    k.run(&["exec", pod, "--", "sh", "-c", script])
}

fn mounted_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&format!("{d}/volumes/")))
        .map(str::to_string)
        .collect()
}

#[test]
fn local_path_claim_binds_on_first_use_holds_its_size_grows_and_goes() {
    let up = Up::start("pv");
    let k = Kubectl133::new(&up.data.join("kubeconfig"), &up.data);
    // `yun up` makes the class just after its API server listens.
    let classes = up.until(&["get", "storageclass"], 20, |o| o.contains("local-path"));
    assert!(
        classes.contains("local-path (default)")
            && classes.contains("yun.dev/local-path")
            && classes.contains("WaitForFirstConsumer"),
        "{classes}"
    );

    // The claim alone waits for its first consumer, defaulted to the default class.
    apply(&up, &k, "pvc.yaml", CLAIM);
    wait("WaitForFirstConsumer", 20, || {
        !events(&k, "local-path-pvc", "WaitForFirstConsumer").is_empty()
    });
    let claim = k.json(&["get", "pvc", "local-path-pvc"]);
    assert_eq!(claim["spec"]["storageClassName"], "local-path");
    assert_eq!(claim["status"]["phase"], "Pending");
    assert!(claim["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .contains(&Value::from("kubernetes.io/pvc-protection")));

    // A pod: the claim is provisioned on the pod's node and bound before the pod is.
    apply(&up, &k, "pod.yaml", POD);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/volume-test",
        "--timeout=90s",
    ]);
    let claim = k.json(&["get", "pvc", "local-path-pvc"]);
    assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-1"
    );
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = k.json(&["get", "pv", &pv_name]);
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    assert_eq!(pv["spec"]["claimRef"]["name"], "local-path-pvc");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"][0],
        "node-1"
    );
    // kubectl 1.20 reads the tables.
    let table = up.ok(&["get", "pv,pvc"]);
    assert!(
        table.contains("RECLAIM POLICY") && table.contains("default/local-path-pvc"),
        "{table}"
    );
    assert!(
        table.contains("Bound") && table.contains("RWO") && table.contains("32Mi"),
        "{table}"
    );

    // Data outlives the pod.
    let out = exec(&k, "volume-test", "echo kept > /data/file && sync");
    assert!(out.status.success(), "{}", text(&out));
    k.ok(&["delete", "pod", "volume-test", "--wait"]);
    apply(&up, &k, "pod.yaml", POD);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/volume-test",
        "--timeout=90s",
    ]);
    let out = exec(&k, "volume-test", "cat /data/file");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kept",
        "{}",
        text(&out)
    );

    // The size is enforced: past 32Mi the pod gets ENOSPC, not the node's disk.
    let out = exec(
        &k,
        "volume-test",
        "dd if=/dev/zero of=/data/big bs=1M count=64; rc=$?; df -k /data; exit $rc",
    );
    let all = text(&out);
    assert!(
        !out.status.success() && all.contains("No space left on device"),
        "{all}"
    );
    exec(&k, "volume-test", "rm /data/big");

    // Growth: the claim asks for 64Mi; the volume and the filesystem follow (at once, or when
    // the pod is started again if the filesystem cannot grow while in use).
    k.ok(&[
        "patch",
        "pvc",
        "local-path-pvc",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}"#,
    ]);
    wait("the volume to grow", 30, || {
        let pv = k.json(&["get", "pv", &pv_name]);
        pv["spec"]["capacity"]["storage"] == "64Mi"
    });
    let claim = k.json(&["get", "pvc", "local-path-pvc"]);
    let pending = claim["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "FileSystemResizePending"));
    if pending {
        k.ok(&["delete", "pod", "volume-test", "--wait"]);
        apply(&up, &k, "pod.yaml", POD);
        k.ok(&[
            "wait",
            "--for=condition=Ready",
            "pod/volume-test",
            "--timeout=90s",
        ]);
    }
    wait("the claim to show 64Mi", 30, || {
        k.json(&["get", "pvc", "local-path-pvc"])["status"]["capacity"]["storage"] == "64Mi"
    });
    let out = exec(&k, "volume-test", "df -k /data | tail -1; cat /data/file");
    let df = String::from_utf8_lossy(&out.stdout).into_owned();
    let size_kib: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(size_kib > 40 * 1024, "the filesystem did not grow: {df}");
    assert!(df.contains("kept"), "{df}");

    // A claim in use stays until its pod goes (pvc-protection); then the volume goes too
    // (reclaim Delete): the object, the mount, the data.
    k.ok(&["delete", "pvc", "local-path-pvc", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        k.json(&["get", "pvc", "local-path-pvc"])["metadata"]["deletionTimestamp"].is_string(),
        "a claim in use is kept"
    );
    k.ok(&["delete", "pod", "volume-test", "--wait"]);
    wait("the volume to be deleted", 30, || {
        !k.run(&["get", "pv", &pv_name]).status.success()
    });
    wait("the volume's data to go", 10, || {
        std::fs::read_dir(up.data.join("volumes")).unwrap().count() == 0
    });
    assert!(
        mounted_under(&up.data).is_empty(),
        "{:?}",
        mounted_under(&up.data)
    );
}

const BLOCK: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: raw}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  resources: {requests: {storage: 8Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: raw}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    volumeDevices: [{name: v, devicePath: /dev/xvda}]
  volumes:
  - name: v
    persistentVolumeClaim: {claimName: raw}
"#;

const STATEFUL: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Retain}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sh, -c, "hostname >> /var/lib/db/owners; sleep 3600"]
        volumeMounts: [{name: data, mountPath: /var/lib/db}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"#;

#[test]
fn block_claims_statefulset_claims_and_static_volumes() {
    let up = Up::start("pvb");
    let k = Kubectl133::new(&up.data.join("kubeconfig"), &up.data);

    // A Block claim is a device of its size in the pod, and only that device.
    apply(&up, &k, "block.yaml", BLOCK);
    k.ok(&["wait", "--for=condition=Ready", "pod/raw", "--timeout=90s"]);
    let out = exec(
        &k,
        "raw",
        "echo on-the-device | dd of=/dev/xvda bs=512 count=1 conv=sync 2>/dev/null; dd if=/dev/xvda bs=13 count=1 2>/dev/null; echo; blockdev --getsize64 /dev/xvda; mknod /dev/other b 7 200 || echo refused",
    );
    let got = text(&out);
    assert!(
        got.contains("on-the-device") && got.contains("8388608") && got.contains("refused"),
        "{got}"
    );
    let out = k.run(&["get", "pvc", "raw", "-o", "wide"]);
    assert!(text(&out).contains("Block"), "{}", text(&out));

    // A StatefulSet's claim templates: one claim per ordinal, kept across the pod's return.
    apply(&up, &k, "sts.yaml", STATEFUL);
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=120s"]);
    for i in 0..2 {
        assert_eq!(phase(&k, &format!("pvc/data-db-{i}")), "Bound");
    }
    k.ok(&["delete", "pod", "db-0", "--wait"]);
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=120s"]);
    wait("db-0 to be back", 60, || phase(&k, "pod/db-0") == "Running");
    let owners = exec(&k, "db-0", "cat /var/lib/db/owners");
    assert_eq!(
        String::from_utf8_lossy(&owners.stdout),
        "db-0\ndb-0\n",
        "{}",
        text(&owners)
    );
    // whenScaled: Delete — the claim of the ordinal scaled away goes with its pod; the
    // others stay.
    k.ok(&["scale", "statefulset", "db", "--replicas=1"]);
    wait("data-db-1 to go with db-1", 60, || {
        !k.run(&["get", "pvc", "data-db-1"]).status.success()
    });
    assert_eq!(phase(&k, "pvc/data-db-0"), "Bound");

    // A static hostPath volume binds to a claim of no class; deleting the claim releases it
    // and Retain keeps it (and its data).
    let host_dir = up.data.join("static-volume");
    std::fs::create_dir_all(&host_dir).unwrap();
    let manual = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: manual, labels: {{tier: manual}}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: {}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: manual}}
spec:
  storageClassName: ""
  accessModes: [ReadWriteOnce]
  selector: {{matchLabels: {{tier: manual}}}}
  resources: {{requests: {{storage: 100Mi}}}}
"#,
        host_dir.display()
    );
    apply(&up, &k, "manual.yaml", &manual);
    wait("the static claim to bind", 30, || {
        phase(&k, "pvc/manual") == "Bound"
    });
    assert_eq!(phase(&k, "pv/manual"), "Bound");
    // Only claims of a class that allows it may grow.
    let out = k.run(&[
        "patch",
        "pvc",
        "manual",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"200Mi"}}}}"#,
    ]);
    assert!(
        text(&out).contains("only dynamically provisioned pvc can be resized"),
        "{}",
        text(&out)
    );
    k.ok(&["delete", "pvc", "manual", "--wait"]);
    wait("the static volume to be released", 30, || {
        phase(&k, "pv/manual") == "Released"
    });
    assert!(host_dir.is_dir());

    k.ok(&["delete", "pod", "raw", "--wait"]);
    k.ok(&["delete", "statefulset", "db", "--wait"]);
    k.ok(&["delete", "pvc", "--all", "--wait"]);
    wait("the provisioned volumes to be deleted", 30, || {
        std::fs::read_dir(up.data.join("volumes")).unwrap().count() == 0
    });
}

#[test]
fn bad_claims_wait_with_the_reason_said() {
    let up = Up::start("pvbad");
    let k = Kubectl133::new(&up.data.join("kubeconfig"), &up.data);
    let bad = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nope}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: nope
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: huge}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 100Ti}}
---
apiVersion: v1
kind: Pod
metadata: {name: huge}
spec:
  containers:
  - {name: c, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /data}]}
  volumes: [{name: v, persistentVolumeClaim: {claimName: huge}}]
---
apiVersion: v1
kind: Pod
metadata: {name: orphan}
spec:
  containers:
  - {name: c, image: busybox, command: [sleep, "3600"], volumeMounts: [{name: v, mountPath: /data}]}
  volumes: [{name: v, persistentVolumeClaim: {claimName: missing}}]
"#;
    apply(&up, &k, "bad.yaml", bad);
    wait("the missing class to be reported", 20, || {
        events(&k, "nope", "ProvisioningFailed")
            .iter()
            .any(|m| m == "storageclass.storage.k8s.io \"nope\" not found")
    });
    wait("the oversized claim to be refused with figures", 30, || {
        events(&k, "huge", "ProvisioningFailed")
            .iter()
            .any(|m| m.contains("requested 100Ti") && m.contains("free"))
    });
    wait("the pod without a claim to be unschedulable", 20, || {
        events(&k, "orphan", "FailedScheduling")
            .iter()
            .any(|m| m.contains("persistentvolumeclaim \"missing\" not found"))
    });
    for name in ["nope", "huge"] {
        assert_eq!(phase(&k, &format!("pvc/{name}")), "Pending");
    }
    assert_eq!(phase(&k, "pod/huge"), "Pending");
    assert!(std::fs::read_dir(up.data.join("volumes")).unwrap().count() == 0);

    // Invalid claims and volumes are refused whole, with kube's 422s.
    let invalid = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: zero}
spec:
  accessModes: [Sometimes]
  resources: {requests: {storage: "0"}}
"#;
    let file = up.data.join("invalid.yaml");
    std::fs::write(&file, invalid).unwrap();
    let out = k.run(&["create", "-f", file.to_str().unwrap()]);
    let msg = text(&out);
    assert!(
        msg.contains("Unsupported value: \"Sometimes\"")
            && msg.contains("must be greater than zero"),
        "{msg}"
    );
    let pv = r#"apiVersion: v1
kind: PersistentVolume
metadata: {name: nowhere}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  local: {path: /srv/x}
"#;
    std::fs::write(&file, pv).unwrap();
    let msg = text(&k.run(&["create", "-f", file.to_str().unwrap()]));
    assert!(msg.contains("Local volume requires node affinity"), "{msg}");
    // A claim's spec is fixed, and it never shrinks.
    let out = k.run(&[
        "patch",
        "pvc",
        "huge",
        "-p",
        r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
    ]);
    assert!(
        text(&out).contains("spec is immutable after creation"),
        "{}",
        text(&out)
    );
}

const SNAPSHOT_SOURCE: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: src}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "echo v1 > /data/f; sleep 3600"]
    volumeMounts: [{name: v, mountPath: /data}]
  volumes: [{name: v, persistentVolumeClaim: {claimName: src}}]
"#;

const FROM_SOURCES: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restored}
spec:
  accessModes: [ReadWriteOnce]
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap1}
  resources: {requests: {storage: 32Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cloned}
spec:
  accessModes: [ReadWriteOnce]
  dataSourceRef: {kind: PersistentVolumeClaim, name: src}
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    volumeMounts: [{name: r, mountPath: /restored}, {name: c, mountPath: /cloned}]
  volumes:
  - {name: r, persistentVolumeClaim: {claimName: restored}}
  - {name: c, persistentVolumeClaim: {claimName: cloned}}
"#;

#[test]
fn snapshots_restore_into_new_claims_and_claims_clone() {
    let up = Up::start("pvsnap");
    let k = Kubectl133::new(&up.data.join("kubeconfig"), &up.data);
    // The snapshot kinds are served by `yun up` itself, with a default class.
    up.until(&["get", "volumesnapshotclass"], 20, |o| {
        o.contains("local-path")
    });
    apply(&up, &k, "src.yaml", SNAPSHOT_SOURCE);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/writer",
        "--timeout=90s",
    ]);

    let snap = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: snap1}\nspec:\n  source: {persistentVolumeClaimName: src}\n";
    apply(&up, &k, "snap.yaml", snap);
    wait("the snapshot to be ready", 30, || {
        k.json(&["get", "volumesnapshot", "snap1"])["status"]["readyToUse"] == true
    });
    let vs = k.json(&["get", "volumesnapshot", "snap1"]);
    assert_eq!(vs["spec"]["volumeSnapshotClassName"], "local-path");
    assert_eq!(vs["status"]["restoreSize"], "16Mi");
    let content = vs["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let table = k.ok(&["get", "volumesnapshot"]);
    assert!(
        table.contains("READYTOUSE") && table.contains("SOURCEPVC") && table.contains("true"),
        "{table}"
    );
    // Written after the snapshot: the clone has it, the restore does not.
    let out = exec(&k, "writer", "echo v2 > /data/f && sync");
    assert!(out.status.success(), "{}", text(&out));

    apply(&up, &k, "from.yaml", FROM_SOURCES);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/reader",
        "--timeout=90s",
    ]);
    let out = exec(
        &k,
        "reader",
        "cat /restored/f /cloned/f; df -k /restored | tail -1",
    );
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("v1"), "{got}");
    assert_eq!(lines.next(), Some("v2"), "{got}");
    let size_kib: u64 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        size_kib > 20 * 1024,
        "the restore was not grown to its 32Mi: {got}"
    );

    // A snapshot of a claim that does not exist says so; deleting a snapshot deletes its
    // content and the copy.
    let bad = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {name: nothing}\nspec:\n  source: {persistentVolumeClaimName: nowhere}\n";
    apply(&up, &k, "bad-snap.yaml", bad);
    wait("the bad snapshot's error", 20, || {
        k.json(&["get", "volumesnapshot", "nothing"])["status"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("persistentvolumeclaim \"nowhere\" not found"))
    });
    k.ok(&["delete", "volumesnapshot", "snap1", "nothing", "--wait"]);
    wait("the content to go", 20, || {
        !k.run(&["get", "volumesnapshotcontent", &content])
            .status
            .success()
    });
    wait("the copy to go", 20, || {
        std::fs::read_dir(up.data.join("volume-snapshots"))
            .unwrap()
            .count()
            == 0
    });
    k.ok(&["delete", "pod", "reader", "writer", "--wait"]);
    k.ok(&["delete", "pvc", "--all", "--wait"]);
    wait("the volumes to be deleted", 30, || {
        std::fs::read_dir(up.data.join("volumes")).unwrap().count() == 0
    });
}

/// The AWS CLI with only the files `yun up` wrote (no flags, no host config).
fn aws_with(up: &Up, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new("aws")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &up.data)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            up.data.join("s3-credentials"),
        )
        .env("AWS_CONFIG_FILE", up.data.join("s3-config"))
        .envs(env.iter().copied())
        .output()
        .expect("aws (the AWS CLI) must be installed")
}

#[test]
fn yun_up_serves_s3_with_its_credentials_beside_the_kubeconfig() {
    use std::os::unix::fs::PermissionsExt;
    let mut up = Up::start("s3up");
    wait("the S3 files", 20, || up.data.join("s3-config").is_file());
    for f in ["s3-credentials", "s3-config", "s3/key.json"] {
        let mode = std::fs::metadata(up.data.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let config = std::fs::read_to_string(up.data.join("s3-config")).unwrap();
    let file = up.data.join("hello.txt");
    std::fs::write(&file, "hello from yun up's S3\n").unwrap();
    let out = aws_with(&up, &["s3", "mb", "s3://first"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = aws_with(
        &up,
        &["s3", "cp", file.to_str().unwrap(), "s3://first/hello.txt"],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    // A restart keeps the endpoint, the key and the data.
    up.restart();
    assert_eq!(
        std::fs::read_to_string(up.data.join("s3-config")).unwrap(),
        config
    );
    let mut got = String::new();
    wait("the object after a restart", 20, || {
        let out = aws_with(&up, &["s3", "cp", "s3://first/hello.txt", "-"], &[]);
        got = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
    });
    assert_eq!(got, "hello from yun up's S3\n");
    // Someone else's secret is refused.
    let out = aws_with(
        &up,
        &["s3", "ls"],
        &[
            ("AWS_ACCESS_KEY_ID", "YUNSOMEONEELSE"),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("InvalidAccessKeyId"),
        "{}",
        text(&out)
    );
}
