//! Jobs and CronJobs through `yun up` with real containers, driven by kubectl: completions
//! at a parallelism, Indexed Jobs, the back-off limit, suspension, TTL after finishing, bad
//! specs, a crash of `yun up` mid-way, and CronJobs firing, keeping their history and
//! honouring Forbid.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::up::Up;

const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

fn apply(up: &Up, manifest: &str) -> String {
    let mut child = Command::new(common::kubectl::KUBECTL)
        .arg("--kubeconfig")
        .arg(up.data.join("kubeconfig"))
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn other_kubectl(bin: &str, up: &Up, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(up.data.join("kubeconfig"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn job(name: &str, spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers: [{{name: c, image: busybox, command: [\"sh\", \"-c\", \"{command}\"]}}]\n---\n"
    )
}

fn jsonpath(up: &Up, what: &str, path: &str) -> String {
    up.ok(&["get", what, "-o", &format!("jsonpath={path}")])
}

fn wait_condition(up: &Up, job: &str, condition: &str, secs: u64) {
    up.until(
        &[
            "get",
            "job",
            job,
            "-o",
            "jsonpath={range .status.conditions[*]}{.type}={.status} {end}",
        ],
        secs,
        |o| o.contains(&format!("{condition}=True")),
    );
}

fn ready(up: &Up) {
    up.until(&["get", "nodes"], 30, |o| {
        o.contains("node-1") && o.contains(" Ready")
    });
}

#[test]
fn jobs_complete_index_fail_suspend_expire_and_refuse_bad_specs() {
    let up = Up::start("jobs");
    ready(&up);
    let manifests = [
        job("twenty", "  completions: 20\n  parallelism: 4\n", "true"),
        job(
            "indexed",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
            "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
        ),
        job("fails", "  backoffLimit: 1\n", "exit 3"),
        job("paused", "  suspend: true\n", "true"),
        job("brief", "  ttlSecondsAfterFinished: 1\n", "true"),
    ]
    .concat();
    let out = apply(&up, &manifests);
    assert!(out.contains("job.batch/twenty created"), "{out}");

    // 20 completions at parallelism 4: exactly 20 pods, all succeeded, each counted once.
    wait_condition(&up, "twenty", "Complete", 60);
    assert_eq!(jsonpath(&up, "job/twenty", "{.status.succeeded}"), "20");
    let phases = up.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=twenty",
        "-o",
        "jsonpath={range .items[*]}{.status.phase} {end}",
    ]);
    let phases: Vec<&str> = phases.split_whitespace().collect();
    assert_eq!(phases.len(), 20, "{phases:?}");
    assert!(phases.iter().all(|p| *p == "Succeeded"), "{phases:?}");
    // Finished pods hold no mounts: their volumes are unmounted when the sandbox is released
    // and each exited container's rootfs by the engine (a node's mount table once grew by three
    // mounts per finished pod, slowing every container operation after them).
    let uids = up.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=twenty",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let data = up.data.to_str().unwrap();
        let ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(data))
            .collect();
        let of_twenty = ours
            .iter()
            .filter(|m| uids.split_whitespace().any(|u| m.contains(u)))
            .count();
        let rootfs = ours.iter().filter(|m| m.ends_with("/merged")).count();
        // The other Jobs run at most a handful of pods (two containers each) meanwhile.
        if of_twenty == 0 && rootfs < 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finished pods keep mounts: {of_twenty} of their volumes, {rootfs} rootfs: {ours:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let finalizers = up.ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=twenty",
        "-o",
        "jsonpath={.items[*].metadata.finalizers}",
    ]);
    assert!(!finalizers.contains("job-tracking"), "{finalizers}");
    let table = other_kubectl(KUBECTL_133, &up, &["get", "job", "twenty"]);
    assert!(
        table.contains("STATUS") && table.contains("COMPLETIONS") && table.contains("DURATION"),
        "{table}"
    );
    assert!(
        table.contains("Complete") && table.contains("20/20"),
        "{table}"
    );

    let described = other_kubectl(KUBECTL_133, &up, &["describe", "job", "twenty"]);
    assert!(
        described.contains("Completions:      20") && described.contains("/ 20 Succeeded /"),
        "{described}"
    );

    // Indexed: each pod sees its index, named and hosted as NAME-INDEX.
    wait_condition(&up, "indexed", "Complete", 30);
    assert_eq!(
        jsonpath(&up, "job/indexed", "{.status.completedIndexes}"),
        "0-2"
    );
    let names = up.ok(&["get", "pods", "-l", "job-name=indexed", "-o", "name"]);
    let mut seen = Vec::new();
    for pod in names.split_whitespace() {
        let log = up.ok(&["logs", pod]);
        let index = pod
            .trim_start_matches("pod/indexed-")
            .split('-')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            log.trim(),
            format!("index={index} host=indexed-{index}"),
            "{pod}"
        );
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // A failing Job stops at its back-off limit (1 retry, after a 10 s back-off).
    wait_condition(&up, "fails", "Failed", 45);
    assert_eq!(
        jsonpath(
            &up,
            "job/fails",
            "{.status.failed} {.status.conditions[?(@.type==\"Failed\")].reason}"
        ),
        "2 BackoffLimitExceeded"
    );

    // Suspended: no pods until resumed.
    wait_condition(&up, "paused", "Suspended", 15);
    let pods = up.ok(&["get", "pods", "-l", "job-name=paused", "-o", "name"]);
    assert!(pods.trim().is_empty(), "{pods}");
    up.ok(&[
        "patch",
        "job",
        "paused",
        "-p",
        "{\"spec\":{\"suspend\":false}}",
    ]);
    wait_condition(&up, "paused", "Complete", 30);

    // ttlSecondsAfterFinished: gone, with its pod, a second after finishing.
    up.until(&["get", "jobs", "-o", "name"], 30, |o| {
        !o.contains("job.batch/brief")
    });
    up.until(
        &["get", "pods", "-l", "job-name=brief", "-o", "name"],
        30,
        |o| o.trim().is_empty(),
    );

    // Finished pods keep no sandbox: no veth is left on the node's bridge (the node agent
    // gives their addresses back, as the kubelet does), while their logs stay readable.
    let bridge = up.node_flags[1].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &bridge])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&out.stdout).into_owned();
        if links.trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "finished pods still attached to {bridge}: {links}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let first = names.split_whitespace().next().unwrap();
    assert!(up.ok(&["logs", first]).contains("index="));

    // Bad specs: 422 naming the fields, nothing stored.
    let bad = job("bad", "  completions: -1\n  parallelism: -2\n", "true")
        .replace("restartPolicy: Never", "restartPolicy: Always");
    let out = apply(&up, &bad);
    for needle in [
        "spec.parallelism: Invalid value: -2: must be greater than or equal to 0",
        "spec.completions: Invalid value: -1: must be greater than or equal to 0",
        "spec.template.spec.restartPolicy: Unsupported value: \"Always\"",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let manual = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: manual}\nspec:\n  manualSelector: true\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n";
    let out = apply(&up, manual);
    assert!(
        out.contains("spec.template.metadata.labels")
            && out.contains("`selector` does not match template `labels`"),
        "{out}"
    );
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: badcron}\nspec:\n  schedule: \"61 * * * *\"\n  timeZone: Mars/Olympus\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{name: c, image: busybox}]\n";
    let out = apply(&up, cron);
    assert!(
        out.contains("spec.schedule: Invalid value: \"61 * * * *\"")
            && out.contains("spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone"),
        "{out}"
    );
    let all = up.ok(&["get", "jobs,cronjobs", "-o", "name"]);
    assert!(
        !all.contains("/bad") && !all.contains("/manual") && !all.contains("badcron"),
        "{all}"
    );
    // Immutable fields.
    let out = up.kubectl(&[
        "patch",
        "job",
        "twenty",
        "-p",
        "{\"spec\":{\"completions\":5}}",
    ]);
    common::assert_fails_with(
        &out,
        "spec.completions: Invalid value: 5: field is immutable",
    );
    let out = up.kubectl(&[
        "patch",
        "job",
        "twenty",
        "-p",
        "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"c\",\"image\":\"alpine\"}]}}}}",
    ]);
    common::assert_fails_with(&out, "spec.template: Invalid value");
    assert_eq!(jsonpath(&up, "job/twenty", "{.spec.completions}"), "20");
}

#[test]
fn a_job_survives_yun_up_being_killed_mid_way() {
    let mut up = Up::start("jobkill");
    ready(&up);
    apply(
        &up,
        &job("steady", "  completions: 12\n  parallelism: 3\n", "sleep 1"),
    );
    up.until(
        &["get", "job", "steady", "-o", "jsonpath={.status.succeeded}"],
        40,
        |o| o.trim().parse::<u32>().is_ok_and(|n| n >= 3),
    );
    up.kill_and_restart();
    wait_condition(&up, "steady", "Complete", 60);
    assert_eq!(jsonpath(&up, "job/steady", "{.status.succeeded}"), "12");
    let phases = up.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=steady",
        "-o",
        "jsonpath={range .items[*]}{.status.phase} {end}",
    ]);
    let succeeded = phases
        .split_whitespace()
        .filter(|p| *p == "Succeeded")
        .count();
    assert_eq!(succeeded, 12, "no completion lost or doubled: {phases}");
}

#[test]
fn cronjobs_fire_keep_their_history_and_forbid_overlap() {
    let up = Up::start("cron");
    ready(&up);
    // `solo` starts suspended: a minute boundary during the steps below would otherwise let it
    // fire before its running Job exists (its controller still tracks that Job's activity).
    let cron = |name: &str, policy: &str, command: &str| {
        let suspend = name == "solo";
        format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}}}\nspec:\n  schedule: \"*/1 * * * *\"\n  suspend: {suspend}\n  concurrencyPolicy: {policy}\n  successfulJobsHistoryLimit: 1\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          terminationGracePeriodSeconds: 1\n          containers: [{{name: c, image: busybox, command: [\"sh\", \"-c\", \"{command}\"]}}]\n---\n")
    };
    let out = apply(
        &up,
        &(cron("tick", "Allow", "true") + &cron("solo", "Forbid", "sleep 1000")),
    );
    assert!(out.contains("cronjob.batch/tick created"), "{out}");
    let described = other_kubectl(KUBECTL_133, &up, &["describe", "cronjob", "solo"]);
    assert!(
        described.contains("*/1 * * * *") && described.contains("Forbid"),
        "{described}"
    );
    let table = other_kubectl(KUBECTL_133, &up, &["get", "cronjobs"]);
    assert!(
        table.contains("SCHEDULE")
            && table.contains("LAST SCHEDULE")
            && table.contains("*/1 * * * *"),
        "{table}"
    );

    // `kubectl create job --from=cronjob/NAME` (kubectl 1.27: 1.20 knows only
    // batch/v1beta1) runs the template.
    other_kubectl(
        KUBECTL_127,
        &up,
        &["create", "job", "by-hand", "--from=cronjob/tick"],
    );
    wait_condition(&up, "by-hand", "Complete", 30);
    // Two finished Jobs the CronJob controls: the history keeps the newer one.
    let owned = |name: &str, cronjob: &str, command: &str| {
        let uid = jsonpath(&up, &format!("cronjob/{cronjob}"), "{.metadata.uid}");
        job(name, "", command).replace(
            &format!("metadata: {{name: {name}}}"),
            &format!("metadata:\n  name: {name}\n  ownerReferences: [{{apiVersion: batch/v1, kind: CronJob, name: {cronjob}, uid: {uid}, controller: true}}]"),
        )
    };
    apply(&up, &owned("old-run", "tick", "true"));
    wait_condition(&up, "old-run", "Complete", 30);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    apply(&up, &owned("new-run", "tick", "true"));
    wait_condition(&up, "new-run", "Complete", 30);
    up.until(&["get", "jobs", "-o", "name"], 20, |o| {
        !o.contains("old-run") && o.contains("new-run")
    });
    // And a running one the Forbid CronJob controls.
    apply(&up, &owned("solo-running", "solo", "sleep 1000"));
    up.until(
        &[
            "get",
            "cronjob",
            "solo",
            "-o",
            "jsonpath={.status.active[*].name}",
        ],
        20,
        |o| o.contains("solo-running"),
    );
    up.ok(&[
        "patch",
        "cronjob",
        "solo",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);

    // The next minute: tick fires (NAME-<minute>), solo does not while its Job runs.
    let jobs = up.until(&["get", "jobs", "-o", "name"], 75, |o| {
        o.lines().any(|l| l.starts_with("job.batch/tick-"))
    });
    let fired = jobs
        .lines()
        .find_map(|l| l.strip_prefix("job.batch/tick-"))
        .unwrap()
        .to_string();
    let _minute: i64 = fired.parse().expect("named for the scheduled minute");
    let stamp = jsonpath(
        &up,
        &format!("job/tick-{fired}"),
        "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    );
    assert!(
        stamp.ends_with(":00+00:00") || stamp.ends_with(":00Z"),
        "{stamp}"
    );
    wait_condition(&up, &format!("tick-{fired}"), "Complete", 30);
    // History limit 1: only the newest completed Job stays.
    up.until(&["get", "jobs", "-o", "name"], 20, |o| {
        !o.contains("new-run")
    });
    up.until(
        &[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ],
        20,
        |o| !o.trim().is_empty(),
    );
    let events = up.until(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=solo",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        20,
        |o| o.contains("JobAlreadyActive"),
    );
    assert!(!events.contains("SuccessfulCreate"), "{events}");
    let jobs = up.ok(&["get", "jobs", "-o", "name"]);
    assert!(
        !jobs
            .lines()
            .any(|l| l.starts_with("job.batch/solo-") && !l.ends_with("solo-running")),
        "{jobs}"
    );
}
