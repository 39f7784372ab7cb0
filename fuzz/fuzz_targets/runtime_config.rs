//! An OCI bundle's config.json, loaded and validated as `yunc create` does.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = yun_runtime::config::fuzz_load_bundle(data);
});
