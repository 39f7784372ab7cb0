# An attacker with valid credentials: raw, correctly signed requests whose bucket names and
# keys try to leave the storage root; plus malformed bodies and bad signatures.
import http.client
import os
import urllib.parse

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ENDPOINT = os.environ["ENDPOINT"]
HOST = urllib.parse.urlsplit(ENDPOINT).netloc
CREDS = Credentials(os.environ["ACCESS"], os.environ["SECRET"])


def raw(method, path, body=b"", headers=None, sign=True, creds=CREDS):
    """Sends `path` exactly as given (no normalisation), SigV4-signed over that path."""
    headers = dict(headers or {})
    if sign:
        req = AWSRequest(method=method, url=ENDPOINT + path, data=body, headers=headers)
        S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
    conn = http.client.HTTPConnection(HOST, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    headers.setdefault("Host", HOST)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data.decode(errors="replace")


def expect(status, code, got):
    s, body = got
    assert s == status and (code is None or f"<Code>{code}</Code>" in body), (status, code, s, body)
    if code is not None:
        assert "<RequestId>" in body and "<Resource>" in body, body


expect(200, None, raw("PUT", "/victim"))
# Keys that look like paths out of the bucket are just keys.
evil_keys = ["../../../../../../tmp/yun-s3-escape", "..", ".", "a/../../b", "/x", "..%2F..%2Fescape2",
             "sp ace/..\\..\\win", "ü/../../ß", "%00nul", "\x00nul", "tmp/x", "objects/../uploads",
             "../tmp/../../../../etc/passwd", "/////", "a//b"]
for i, k in enumerate(evil_keys):
    # Encoded as clients encode (botocore signs the path as sent).
    path = "/victim/" + urllib.parse.quote(k, safe="/~")
    expect(200, None, raw("PUT", path, body=f"evil {i}".encode()))
    s, body = raw("GET", path)
    assert s == 200 and body == f"evil {i}", (k, s, body)
# Bucket names that try to leave the root: refused or unknown, never a path.
expect(404, "NoSuchBucket", raw("PUT", "/../victim", body=b"x"))  # bucket "..", key "victim"
for b in ["..", ".", "a..b", "UPPER", "x" * 64, "ab", "-ab", "192.168.0.1", "a_b"]:
    path = "/" + urllib.parse.quote(b, safe="/.")
    expect(400, "InvalidBucketName", raw("PUT", path))
    s, body = raw("GET", path + "/key")
    assert s in (400, 404), (b, s, body)
expect(404, "NoSuchBucket", raw("GET", "/../../etc/passwd"))
expect(404, "NoSuchBucket", raw("GET", "/nobucket/key"))
expect(404, "NoSuchKey", raw("GET", "/victim/absent"))
expect(404, "NoSuchUpload", raw("PUT", "/victim/k?partNumber=1&uploadId=..%2F..%2F..%2Fetc"))
expect(404, "NoSuchUpload", raw("POST", "/victim/k?uploadId=0123456789abcdef0123456789abcdef",
                                body=b"<CompleteMultipartUpload/>"))
expect(400, "MalformedXML", raw("POST", "/victim?delete", body=b"<Delete><Object><Key>x</Key></Object>"))
expect(400, "MalformedXML", raw("PUT", "/victim?versioning", body=b"not xml"))
expect(400, "KeyTooLongError", raw("PUT", "/victim/" + "k" * 1025, body=b"x"))
expect(501, "NotImplemented", raw("GET", "/victim?lifecycle"))
expect(501, "NotImplemented", raw("PUT", "/victim/k?acl"))
expect(405, "MethodNotAllowed", raw("DELETE", "/"))
# Unsigned, badly signed, unknown key, signed body that does not match its hash.
expect(403, "AccessDenied", raw("GET", "/victim", sign=False))
expect(403, "InvalidAccessKeyId", raw("GET", "/victim", creds=Credentials("nobody", "x")))
expect(403, "SignatureDoesNotMatch", raw("GET", "/victim", creds=Credentials(os.environ["ACCESS"], "bad")))
req = AWSRequest(method="PUT", url=ENDPOINT + "/victim/hash", data=b"original")
S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
h = dict(req.headers.items())
h["X-Amz-Content-SHA256"] = "0" * 64
expect(403, "SignatureDoesNotMatch", raw("PUT", "/victim/hash", body=b"original", headers=h, sign=False))
# Signed over one body, sent with another of the same length.
req = AWSRequest(method="PUT", url=ENDPOINT + "/victim/hash", data=b"original")
S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
expect(400, "XAmzContentSHA256Mismatch",
       raw("PUT", "/victim/hash", body=b"tampered", headers=dict(req.headers.items()), sign=False))
expect(404, "NoSuchKey", raw("GET", "/victim/hash"))
# Clock skew: a request signed 20 minutes ago.
import datetime
import botocore.auth
real_now = botocore.auth.get_current_datetime
botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(minutes=20)
expect(403, "RequestTimeTooSkewed", raw("GET", "/victim"))
botocore.auth.get_current_datetime = real_now
# Nothing was written outside the storage root.
assert not os.path.exists("/tmp/yun-s3-escape")
print("hostile ok")
