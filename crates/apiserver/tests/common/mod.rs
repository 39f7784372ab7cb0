//! What the API server's integration tests share: an in-process server on a free loopback
//! port with its data in a test's directory, and a kube-rs client from the kubeconfig it wrote.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// A server with the defaults, changed by `f`.
pub async fn start_with(
    dir: &Path,
    f: impl FnOnce(&mut yun_apiserver::Config),
) -> yun_apiserver::Running {
    let mut config = yun_apiserver::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        ..Default::default()
    };
    f(&mut config);
    yun_apiserver::start(config).await.expect("server starts")
}

/// A server with the defaults.
pub async fn start(dir: &Path) -> yun_apiserver::Running {
    start_with(dir, |_| {}).await
}

/// A client as the admin of `running` (its kubeconfig).
pub async fn connect(running: &yun_apiserver::Running) -> Client {
    let kc = Kubeconfig::read_from(&running.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// The Status of an API error (panics on any other error).
pub fn api_status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other}"),
    }
}
