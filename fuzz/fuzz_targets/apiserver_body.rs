//! A request body of the API server: the first byte picks the content type (JSON, YAML or one
//! of the three PATCH types), the rest is the body.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((&ct, body)) = data.split_first() {
        let _ =
            yun_apiserver::decode_body(yun_apiserver::BODY_CONTENT_TYPES[ct as usize % yun_apiserver::BODY_CONTENT_TYPES.len()], body);
    }
});
