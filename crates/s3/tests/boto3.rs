//! boto3 (from PyPI) against the server: the script in tests/py/boto3_client.py.

mod common;

use common::*;

#[test]
fn boto3_multipart_presign_listing_conditions_auth() {
    require("python3");
    require_python("boto3");
    let s = Server::start();
    let out = s.python(include_str!("py/boto3_client.py"));
    assert!(out.contains("boto3 ok"), "{out}");
    s.assert_no_temp_files_anywhere();
}
