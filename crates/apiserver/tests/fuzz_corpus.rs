//! The committed seed corpus of the `apiserver_body` fuzz target (and every input a fuzzer once
//! crashed on, added there after the fix), replayed through the same entry without libFuzzer:
//! the first byte picks the content type, the rest is the body.

use std::path::Path;

#[test]
fn apiserver_body_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/apiserver_body");
    let mut decoded = 0;
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let Some((&ct, body)) = data.split_first() else {
            continue;
        };
        let ct = yun_apiserver::BODY_CONTENT_TYPES
            [ct as usize % yun_apiserver::BODY_CONTENT_TYPES.len()];
        match yun_apiserver::decode_body(ct, body) {
            Ok(v) => {
                assert!(v.is_object(), "{}: {v}", path.display());
                decoded += 1;
            }
            Err((code, msg)) => {
                assert!(
                    (400..500).contains(&code) && !msg.is_empty(),
                    "{}: {code} {msg}",
                    path.display()
                );
                refused.push(format!("{}: {code} {msg}", path.display()));
            }
        }
    }
    // The seeds are valid bodies of each type: the harness reaches past the decoders.
    assert!(decoded >= 5, "only {decoded} seeds decoded: {refused:#?}");
}
