# boto3 against yun's S3: multipart with many parts, presigned GET/PUT, a paginated listing of
# 2500 keys, conditional GETs, flexible checksums, and refused credentials.
import concurrent.futures
import datetime
import hashlib
import os
import time
import urllib.error
import urllib.request

import boto3
import botocore
from botocore.config import Config

ENDPOINT = os.environ["ENDPOINT"]


def client(secret=None, access=None, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access or os.environ["ACCESS"],
        aws_secret_access_key=secret or os.environ["SECRET"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}, max_pool_connections=16, **cfg),
    )


def code(e):
    return e.response["Error"]["Code"]


def expect_error(fn, want):
    try:
        fn()
    except botocore.exceptions.ClientError as e:
        assert code(e) == want, f"expected {want}, got {code(e)}: {e}"
        return e
    raise AssertionError(f"expected {want}, got success")


s3 = client()
s3.create_bucket(Bucket="boto")

# Multipart: 12 parts of 5 MiB (the last shorter), ETag = md5(concat(md5s))-12.
parts, md5s, whole = [], b"", hashlib.sha256()
up = s3.create_multipart_upload(Bucket="boto", Key="many/parts.bin", ContentType="application/x-yun")
for n in range(1, 13):
    data = (bytes([n]) * 1024 + os.urandom(1024)) * (5 * 1024 // 2) if n < 12 else os.urandom(12345)
    whole.update(data)
    md5s += hashlib.md5(data).digest()
    r = s3.upload_part(Bucket="boto", Key="many/parts.bin", UploadId=up["UploadId"], PartNumber=n, Body=data)
    assert r["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    parts.append({"PartNumber": n, "ETag": r["ETag"]})
done = s3.complete_multipart_upload(Bucket="boto", Key="many/parts.bin", UploadId=up["UploadId"],
                                    MultipartUpload={"Parts": parts})
assert done["ETag"] == '"%s-12"' % hashlib.md5(md5s).hexdigest(), done["ETag"]
got = s3.get_object(Bucket="boto", Key="many/parts.bin")
assert got["ContentType"] == "application/x-yun"
assert hashlib.sha256(got["Body"].read()).hexdigest() == whole.hexdigest()
expect_error(lambda: s3.upload_part(Bucket="boto", Key="k", UploadId=up["UploadId"], PartNumber=1, Body=b"x"),
             "NoSuchUpload")
up2 = s3.create_multipart_upload(Bucket="boto", Key="k")
for bad in (0, 10001):
    expect_error(lambda: s3.upload_part(Bucket="boto", Key="k", UploadId=up2["UploadId"], PartNumber=bad, Body=b"x"),
                 "InvalidArgument")
s3.abort_multipart_upload(Bucket="boto", Key="k", UploadId=up2["UploadId"])

# The managed transfer (threads, multipart) round trip.
src = os.path.join(os.environ["WORK"], "managed.bin")
with open(src, "wb") as f:
    f.write(os.urandom(13 * 1024 * 1024))
from boto3.s3.transfer import TransferConfig
tc = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, max_concurrency=4)
s3.upload_file(src, "boto", "managed.bin", Config=tc)
dst = src + ".back"
s3.download_file("boto", "managed.bin", dst, Config=tc)
assert open(src, "rb").read() == open(dst, "rb").read()

# Flexible checksums. Over plain HTTP botocore sends them as headers; over HTTPS as the
# trailer of an aws-chunked body (STREAMING-UNSIGNED-PAYLOAD-TRAILER): botocore is made to
# believe the endpoint is HTTPS for the second round, so its real trailer encoder is used.
import botocore.httpchecksum as httpchecksum
real_urlparse = httpchecksum.urlparse
for how in ("header", "trailer"):
    if how == "trailer":
        httpchecksum.urlparse = lambda u: real_urlparse(u)._replace(scheme="https")
    for algo in ("CRC32", "SHA256"):
        body = b"checked %s %s " % (how.encode(), algo.encode()) * 10000
        s3.put_object(Bucket="boto", Key=f"checksum-{how}-{algo}", Body=body, ChecksumAlgorithm=algo)
        assert s3.get_object(Bucket="boto", Key=f"checksum-{how}-{algo}")["Body"].read() == body
httpchecksum.urlparse = real_urlparse
# A checksum header that does not match the body.
expect_error(lambda: s3.put_object(Bucket="boto", Key="bad-sum", Body=b"abc", ChecksumCRC32="AAAAAA=="), "BadDigest")

# Presigned GET and PUT through urllib; an expired URL is refused.
url = s3.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "pre signed/ü.txt"}, ExpiresIn=300)
req = urllib.request.Request(url, data=b"presigned body", method="PUT")
assert urllib.request.urlopen(req).status == 200
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "pre signed/ü.txt"}, ExpiresIn=300)
assert urllib.request.urlopen(url).read() == b"presigned body"
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "pre signed/ü.txt"}, ExpiresIn=1)
time.sleep(2.1)
try:
    urllib.request.urlopen(url)
    raise AssertionError("expired presigned URL accepted")
except urllib.error.HTTPError as e:
    body = e.read().decode()
    assert e.code == 403 and "<Code>AccessDenied</Code>" in body and "Request has expired" in body, body
# A tampered presigned URL.
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "pre signed/ü.txt"}, ExpiresIn=300)
try:
    urllib.request.urlopen(url.replace("X-Amz-Expires=300", "X-Amz-Expires=301"))
    raise AssertionError("tampered presigned URL accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403 and "SignatureDoesNotMatch" in e.read().decode()

# 2500 keys (some unicode, sorted by UTF-8 bytes), listed 1000 at a time.
keys = [f"list/{i:05d}" for i in range(2480)] + [f"list/ü{i}" for i in range(10)] + [f"list/z/{i}" for i in range(10)]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(lambda k: s3.put_object(Bucket="boto", Key=k, Body=k.encode()), keys))
pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="boto", Prefix="list/"))
listed = [o["Key"] for p in pages for o in p.get("Contents", [])]
assert len(pages) == 3, len(pages)
assert listed == sorted(keys, key=lambda k: k.encode()), "listing order"
pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="boto", Prefix="list/", Delimiter="/",
                                                            PaginationConfig={"PageSize": 700}))
prefixes = [c["Prefix"] for p in pages for c in p.get("CommonPrefixes", [])]
assert prefixes == ["list/z/"], prefixes
assert sum(len(p.get("Contents", [])) for p in pages) == 2490
v1 = list(s3.get_paginator("list_objects").paginate(Bucket="boto", Prefix="list/"))
assert [o["Key"] for p in v1 for o in p["Contents"]] == listed
# Asked for explicitly, the url encoding is left to the caller to decode.
enc = s3.list_objects_v2(Bucket="boto", Prefix="pre signed/", EncodingType="url")
assert [o["Key"] for o in enc["Contents"]] == ["pre%20signed/%C3%BC.txt"], enc["Contents"]

# Conditional GETs.
head = s3.head_object(Bucket="boto", Key="list/00001")
etag, modified = head["ETag"], head["LastModified"]
assert s3.get_object(Bucket="boto", Key="list/00001", IfMatch=etag)["Body"].read() == b"list/00001"
expect_error(lambda: s3.get_object(Bucket="boto", Key="list/00001", IfNoneMatch=etag), "304")
expect_error(lambda: s3.get_object(Bucket="boto", Key="list/00001", IfMatch='"nope"'), "PreconditionFailed")
expect_error(lambda: s3.get_object(Bucket="boto", Key="list/00001", IfModifiedSince=modified + datetime.timedelta(seconds=5)), "304")
expect_error(lambda: s3.get_object(Bucket="boto", Key="list/00001", IfUnmodifiedSince=modified - datetime.timedelta(days=1)), "PreconditionFailed")
assert s3.get_object(Bucket="boto", Key="list/00001", IfModifiedSince=modified - datetime.timedelta(days=1))["Body"].read()

# Refused credentials.
expect_error(lambda: client(secret="wrong-secret").list_objects_v2(Bucket="boto"), "SignatureDoesNotMatch")
expect_error(lambda: client(secret="wrong-secret").put_object(Bucket="boto", Key="x", Body=b"x"), "SignatureDoesNotMatch")
expect_error(lambda: client(access="AKIDUNKNOWN").list_buckets(), "InvalidAccessKeyId")
anon = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                    config=Config(signature_version=botocore.UNSIGNED))
expect_error(lambda: anon.list_objects_v2(Bucket="boto"), "AccessDenied")
print("boto3 ok")
