#!/usr/bin/env python3
"""Images made by another tool than yun (Python's tarfile, urllib), for yun's tests.

    images.py archive CASE OUT.tar [--suid BINARY]   a docker-archive (what `podman save` writes)
    images.py push CASE HOST:PORT REPO:TAG            the same image, pushed to a registry over HTTP

Every image has two layers: a good base, then the layer of CASE.

    suid                      BINARY as usr/bin/yun-euid, setuid root (04755 0:0), and device
                              nodes devs/kmsg (c 1:11 0666) and devs/vda (b 254:0 0666)
    dotdot                    an entry "../../yun-escape"
    hardlink-outside          a hard link to "../../../etc/passwd"
    hardlink-through-symlink  s -> /etc, then a hard link to "s/passwd"
    whiteout-empty            a whiteout with no name: "d/.wh."
    whiteout-dir              a whiteout used as a directory: ".wh.d/x"
    diffid-mismatch           the config's diff_id is another tar's digest
    truncated-gzip            the layer is the first half of a gzip stream
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile
import urllib.request


def tar_bytes(add):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add(t)
    return buf.getvalue()


def member(t, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = 0
    info.mtime = 1_600_000_000
    info.linkname = link
    info.devmajor, info.devminor = dev
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def base(t):
    member(t, "etc", tarfile.DIRTYPE, mode=0o755)
    member(t, "etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n")
    member(t, "d", tarfile.DIRTYPE, mode=0o755)


def case_layer(case, suid):
    """(stored bytes, uncompressed tar the config's diff_id is taken from)"""
    plain = None
    if case == "suid":
        binary = open(suid, "rb").read()

        def add(t):
            member(t, "usr", tarfile.DIRTYPE, mode=0o755)
            member(t, "usr/bin", tarfile.DIRTYPE, mode=0o755)
            member(t, "usr/bin/yun-euid", data=binary, mode=0o4755)
            member(t, "devs", tarfile.DIRTYPE, mode=0o755)
            member(t, "devs/kmsg", tarfile.CHRTYPE, mode=0o666, dev=(1, 11))
            member(t, "devs/vda", tarfile.BLKTYPE, mode=0o666, dev=(254, 0))
    elif case == "dotdot":
        def add(t):
            member(t, "../../yun-escape", data=b"x")
    elif case == "hardlink-outside":
        def add(t):
            member(t, "h", tarfile.LNKTYPE, link="../../../etc/passwd")
    elif case == "hardlink-through-symlink":
        def add(t):
            member(t, "s", tarfile.SYMTYPE, mode=0o777, link="/etc")
            member(t, "h", tarfile.LNKTYPE, link="s/passwd")
    elif case == "whiteout-empty":
        def add(t):
            member(t, "d/.wh.")
    elif case == "whiteout-dir":
        def add(t):
            member(t, ".wh.d", tarfile.DIRTYPE, mode=0o755)
            member(t, ".wh.d/x")
    elif case == "diffid-mismatch":
        layer = tar_bytes(lambda t: member(t, "f", data=b"what is stored"))
        return layer, tar_bytes(lambda t: member(t, "f", data=b"what the config claims"))
    elif case == "truncated-gzip":
        plain = tar_bytes(lambda t: member(t, "f", data=bytes(range(256)) * 512))
        whole = gzip.compress(plain)
        return whole[: len(whole) // 2], plain
    else:
        sys.exit(f"images.py: unknown case {case!r}")
    layer = tar_bytes(add)
    return layer, layer


def image(case, suid):
    """(config bytes, [(layer bytes, media type)])"""
    base_layer = tar_bytes(base)
    stored, plain = case_layer(case, suid)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/usr/bin/yun-euid"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in (base_layer, plain)],
        },
        "author": f"yun-test {case}",
    }).encode()
    gz = stored[:2] == b"\x1f\x8b"
    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else "")
    return config, [(base_layer, "application/vnd.oci.image.layer.v1.tar"), (stored, layer_type)]


def archive(case, out, suid):
    config, layers = image(case, suid)
    with tarfile.open(out, "w") as t:
        def put(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        put("config.json", config)
        names = []
        for i, (data, _) in enumerate(layers):
            names.append(f"layer{i}.tar")
            put(names[-1], data)
        put("manifest.json", json.dumps([{
            "Config": "config.json",
            "RepoTags": [f"localhost/yun-test-{case}:v1"],
            "Layers": names,
        }]).encode())


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(case, registry, ref):
    repo, tag = ref.rsplit(":", 1)
    config, layers = image(case, None)
    base_url = f"http://{registry}/v2/{repo}"

    def upload(data):
        start = urllib.request.Request(f"{base_url}/blobs/uploads/", method="POST", data=b"")
        with urllib.request.urlopen(start) as r:
            location = r.headers["Location"]
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        put = urllib.request.Request(
            f"{location}{sep}digest={digest(data)}", method="PUT", data=data,
            headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(put).close()

    upload(config)
    for data, _ in layers:
        upload(data)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": mt, "digest": digest(d), "size": len(d)} for d, mt in layers],
    }).encode()
    put = urllib.request.Request(
        f"{base_url}/manifests/{tag}", method="PUT", data=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    urllib.request.urlopen(put).close()


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "archive":
        suid = args[4] if len(args) == 5 and args[3] == "--suid" else None
        archive(args[1], args[2], suid)
    elif len(args) == 4 and args[0] == "push":
        push(args[1], args[2], args[3])
    else:
        sys.exit(__doc__)
