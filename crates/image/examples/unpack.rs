//! Unpack one layer tar into a directory, as `Store::unpack` does (for bench/image.sh).
//!
//!     cargo run --release -p yun-image --example unpack -- LAYER_TAR DEST

use std::fs::{self, File};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, layer, dest] = &args[..] else {
        anyhow::bail!("usage: unpack LAYER_TAR DEST");
    };
    let dest = Path::new(dest);
    fs::create_dir_all(dest)?;
    let f = File::open(layer).map_err(|e| anyhow::anyhow!("{layer}: {e}"))?;
    let opts = yun_image::UnpackOptions {
        compute_diff_id: std::env::var_os("YUN_UNPACK_HASH").is_some(),
    };
    let stats = yun_image::unpack_layer(f, dest, &opts)?;
    if std::env::var_os("YUN_UNPACK_VERBOSE").is_some() {
        eprintln!("{stats:?}");
    }
    Ok(())
}
