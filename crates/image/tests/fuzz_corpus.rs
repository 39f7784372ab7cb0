//! The committed seed corpus of the `unpack_layer` and `image_manifest` fuzz targets (and every
//! input a fuzzer once crashed on, added there after the fix), replayed through the same
//! entries without libFuzzer, so the ordinary suite covers them.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: empty corpus", dir.display());
    inputs
}

#[test]
fn unpack_layer_corpus() {
    let escaped = ["/tmp/yun-fuzz-escaped", "/yun-fuzz-escaped"];
    for (path, data) in corpus("unpack_layer") {
        yun_image::fuzzing::unpack(&data);
        for e in escaped {
            assert!(
                !Path::new(e).exists(),
                "{}: the unpack wrote {e} outside its directory",
                path.display()
            );
        }
    }
}

#[test]
fn image_manifest_corpus() {
    for (_, data) in corpus("image_manifest") {
        yun_image::fuzzing::manifest(&data);
    }
}
