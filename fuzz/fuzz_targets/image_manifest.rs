//! Registry documents: manifests, indexes, image configs, digests and references.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| yun_image::fuzzing::manifest(data));
