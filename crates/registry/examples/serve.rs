//! `cargo run --release -p yun-registry --example serve -- ADDR ROOT [HTPASSWD]`: the registry
//! without the `yun` binary (benchmarks use it until `yun registry serve` exists).

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(root)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: serve ADDR ROOT [HTPASSWD]");
    };
    let mut config = yun_registry::Config::new(addr.parse()?, root);
    config.htpasswd = args.get(2).map(Into::into);
    // The benchmarks compare with a docker-registry whose deletes are on.
    config.enable_delete = true;
    // YUN_LOG=debug adds an access log with timings.
    let level = match std::env::var("YUN_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    eprintln!("yun registry on http://{addr}, storage {root}");
    tokio::runtime::Runtime::new()?.block_on(yun_registry::serve(config))
}
