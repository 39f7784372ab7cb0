//! A layer tar (plain, gzip or zstd) unpacked into a scratch directory.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| yun_image::fuzzing::unpack(data));
