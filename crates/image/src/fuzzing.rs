//! Entries for the fuzz targets in `fuzz/` and their corpus replay tests: each takes arbitrary
//! bytes, as they would arrive from a registry or an archive, and must return (with an error or
//! not) without panicking, hanging or writing outside its scratch directory.

use std::io::Cursor;

use oci_spec::image::ImageConfiguration;

use crate::{kind_of, normalize, pick_platform, Digest, Index, Manifest, Reference};
use crate::{unpack_layer, UnpackOptions};

/// Unpacks `data` as a layer (plain, gzip or zstd tar) into a fresh `yun-fuzz-*` temp dir,
/// removed afterwards.
pub fn unpack(data: &[u8]) {
    let Ok(dir) = tempfile::Builder::new()
        .prefix("yun-fuzz-unpack-")
        .tempdir()
    else {
        return;
    };
    let opts = UnpackOptions {
        compute_diff_id: true,
    };
    let _ = unpack_layer(Cursor::new(data.to_vec()), dir.path(), &opts);
}

/// Runs `data` through every parser of registry documents: manifest kind sniffing, image
/// manifest, index (and platform choice), image config, and, as text, digests and references.
pub fn manifest(data: &[u8]) {
    let _ = kind_of(data);
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        // What is recorded must serialize back.
        serde_json::to_vec(&m).expect("a parsed manifest serializes");
    }
    if let Ok(i) = serde_json::from_slice::<Index>(data) {
        let _ = pick_platform(&i);
    }
    let _ = serde_json::from_slice::<ImageConfiguration>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = s.parse::<Digest>();
        if let Ok(r) = Reference::parse(s) {
            let _ = r.normalized();
            let _ = r.candidates();
        }
        let _ = normalize(s);
    }
}
