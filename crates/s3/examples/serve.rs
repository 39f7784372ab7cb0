//! `YUN_S3_ACCESS_KEY=… YUN_S3_SECRET_KEY=… cargo run --release -p yun-s3 --example serve --
//! ADDR ROOT`: the S3 server without building the whole `yun` binary (bench/storage-s3.sh uses
//! it when no release `yun` is at hand; both call `yun_s3::serve` alike).

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(root)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: serve ADDR ROOT (keys in YUN_S3_ACCESS_KEY, YUN_S3_SECRET_KEY)");
    };
    let key = |name: &str| {
        std::env::var(name).map_err(|_| anyhow::anyhow!("{name}: not set in the environment"))
    };
    let mut config = yun_s3::Config::new(addr.parse()?, root);
    config
        .credentials
        .push((key("YUN_S3_ACCESS_KEY")?, key("YUN_S3_SECRET_KEY")?));
    eprintln!("yun s3 on http://{addr}, storage {root}");
    tokio::runtime::Runtime::new()?.block_on(yun_s3::serve(config))
}
