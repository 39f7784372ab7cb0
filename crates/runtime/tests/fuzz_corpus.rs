//! The committed seed corpus of the `runtime_config` fuzz target (and every input a fuzzer once
//! crashed on, added there after the fix), replayed through the same entry without libFuzzer.

use std::path::Path;

#[test]
fn runtime_config_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/runtime_config");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = yun_runtime::config::fuzz_load_bundle(&data);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The harness itself works: a good config loads, a bad one names its field.
        match name.as_str() {
            "minimal.json" => assert!(result.is_ok(), "{name}: {:#}", result.unwrap_err()),
            "bad_process.json" => {
                let e = format!("{:#}", result.unwrap_err());
                assert!(e.contains("process.cwd"), "{e}");
            }
            _ => {}
        }
        names.push(name);
    }
    assert!(names.len() >= 3, "{names:?}");
    // Every scratch bundle was removed.
    let left = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("yun-fuzz-config-{}-", std::process::id())))
        .count();
    assert_eq!(left, 0);
}
