#!/usr/bin/env python3
"""OCI image layouts the test registries serve, made without podman, and the
SIF upload that Apptainer's `oras push` does, through the registry API.

  oci-images.py debian ROOT OUTDIR
      A root filesystem (a Debian 12 debootstrap root) as a 3-layer gzip image
      in the OCI layout OUTDIR, tag "12": the rest of the root, usr/lib,
      usr/share. Reproducible (sorted names, numeric owners, gzip -n): the same
      root gives the same digests. Kept when OUTDIR was made from the same
      root (a listing of names, sizes and mtimes), so a rerun costs a second.
      The benchmarks use it too.
  oci-images.py variants SRC_LAYOUT OUTDIR
      From the single-arch layout SRC_LAYOUT (the layered demo fixture), the
      layout OUTDIR with the tags
        multi          an image index: SRC's amd64 manifest and an arm64 one
                       (same layers, a config saying arm64, so a distinct
                       manifest digest)
        foreign        an image index with the arm64 manifest only
        foreign-single the arm64 manifest alone
        zstd           SRC's image with its layers recompressed with zstd (skopeo
                       1.9 reuses the gzip blobs a registry already has instead)
  oci-images.py push-sif URL REPO TAG FILE [--user U --password-file F] [--ca CA]
      FILE as an ORAS artifact: config application/vnd.sylabs.sif.config.v1+json,
      one layer application/vnd.sylabs.sif.layer.v1.sif titled NAME.sif.
      URL is the registry's base (http://127.0.0.1:15000). Prints the
      manifest's digest.
"""
import base64
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"
REF_NAME = "org.opencontainers.image.ref.name"


def die(msg):
    print(f"oci-images.py: {msg}", file=sys.stderr)
    sys.exit(1)


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path):
        self.path = path
        self.blobs = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobs, exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            f.write('{"imageLayoutVersion":"1.0.0"}')
        self.refs = []

    def put(self, data):
        """Store bytes as a blob; its descriptor's digest and size."""
        hexd = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, hexd), "wb") as f:
            f.write(data)
        return f"sha256:{hexd}", len(data)

    def put_json(self, media_type, obj):
        data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        digest, size = self.put(data)
        return {"mediaType": media_type, "digest": digest, "size": size}

    def tag(self, name, descriptor):
        d = dict(descriptor)
        d["annotations"] = {REF_NAME: name}
        self.refs.append(d)

    def finish(self):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        tmp = os.path.join(self.path, "index.json.tmp")
        with open(tmp, "w") as f:
            json.dump(index, f)
        os.rename(tmp, os.path.join(self.path, "index.json"))


def read_blob(layout, digest):
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        return f.read()


def root_listing_key(root):
    """A digest of the root's names, sizes and mtimes: whether a cached
    layout was made from this root."""
    out = subprocess.run(
        ["find", ".", "-printf", "%P %y %s %T@ %m %U %G\\n"],
        cwd=root, check=True, capture_output=True,
    ).stdout
    return hashlib.sha256(b"\n".join(sorted(out.split(b"\n")))).hexdigest()


def gzip_layer(layout, root, members, exclude):
    """tar MEMBERS of ROOT | gzip -n into the layout: (descriptor, diff_id)."""
    tar = ["tar", "-C", root, "--sort=name", "--numeric-owner", "--format=pax",
           "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
           "--one-file-system", "-cf", "-"]
    for e in exclude:
        tar.append(f"--exclude=./{e}")
    tar.extend(members)
    tmp = os.path.join(layout.path, "layer.tmp")
    diff = hashlib.sha256()
    with open(tmp, "wb") as out:
        gz = subprocess.Popen(["gzip", "-n", "-6"], stdin=subprocess.PIPE, stdout=out)
        tp = subprocess.Popen(tar, stdout=subprocess.PIPE)
        while True:
            chunk = tp.stdout.read(1 << 20)
            if not chunk:
                break
            diff.update(chunk)
            gz.stdin.write(chunk)
        gz.stdin.close()
        if tp.wait() != 0 or gz.wait() != 0:
            die(f"tar/gzip of {members} in {root} failed")
    comp = hashlib.sha256()
    size = 0
    with open(tmp, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            comp.update(chunk)
            size += len(chunk)
    os.rename(tmp, os.path.join(layout.blobs, comp.hexdigest()))
    desc = {"mediaType": OCI_LAYER_GZIP, "digest": f"sha256:{comp.hexdigest()}", "size": size}
    return desc, f"sha256:{diff.hexdigest()}"


def debian(root, outdir):
    if not os.path.isfile(os.path.join(root, "etc", "os-release")):
        die(f"{root} has no etc/os-release: not a Debian root")
    key = root_listing_key(root)
    stamp = os.path.join(outdir, "source.stamp")
    if os.path.isfile(os.path.join(outdir, "index.json")) and os.path.isfile(stamp):
        with open(stamp) as f:
            if f.read().strip() == key:
                return
    tmpdir = outdir.rstrip("/") + ".tmp"
    shutil.rmtree(tmpdir, ignore_errors=True)
    layout = Layout(tmpdir)
    # Three layers of different sizes: the base system, the libraries, the
    # shared data and documentation (usr/ itself is in the first one).
    layers = [
        gzip_layer(layout, root, ["."], ["usr/lib", "usr/share"]),
        gzip_layer(layout, root, ["./usr/lib"], []),
        gzip_layer(layout, root, ["./usr/share"], []),
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
            "Labels": {"org.example.fixture": "debian-12"},
        },
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
        "history": [{"created_by": "tests/registry/oci-images.py debian", "comment": p}
                    for p in ["base", "usr/lib", "usr/share"]],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.put_json(OCI_CONFIG, config),
        "layers": [desc for desc, _ in layers],
    }
    layout.tag("12", layout.put_json(OCI_MANIFEST, manifest))
    layout.finish()
    with open(os.path.join(tmpdir, "source.stamp"), "w") as f:
        f.write(key + "\n")
    subprocess.run(["chmod", "-R", "a+rX", tmpdir], check=True)
    shutil.rmtree(outdir, ignore_errors=True)
    os.rename(tmpdir, outdir)


def zstd_of(layout, gzipped):
    """The gzip blob recompressed with zstd, stored in the layout."""
    plain = subprocess.run(["gzip", "-dc"], input=gzipped, check=True, capture_output=True).stdout
    packed = subprocess.run(["zstd", "-q", "-c", "-3"], input=plain, check=True,
                            capture_output=True).stdout
    digest, size = layout.put(packed)
    return {"mediaType": OCI_LAYER_ZSTD, "digest": digest, "size": size}


def variants(src, outdir):
    with open(os.path.join(src, "index.json")) as f:
        top = json.load(f)
    amd64_desc = top["manifests"][0]
    amd64 = json.loads(read_blob(src, amd64_desc["digest"]))
    shutil.rmtree(outdir, ignore_errors=True)
    layout = Layout(outdir)
    # Copy every blob the source has (config, layers, the manifest).
    for name in os.listdir(os.path.join(src, "blobs", "sha256")):
        shutil.copyfile(os.path.join(src, "blobs", "sha256", name), os.path.join(layout.blobs, name))
    config = json.loads(read_blob(src, amd64["config"]["digest"]))
    config["architecture"] = "arm64"
    config["variant"] = "v8"
    config.setdefault("config", {}).setdefault("Labels", {})["org.example.arch"] = "arm64"
    arm64 = dict(amd64)
    arm64["config"] = layout.put_json(OCI_CONFIG, config)
    arm64_desc = layout.put_json(OCI_MANIFEST, arm64)
    amd64_entry = {"mediaType": OCI_MANIFEST, "digest": amd64_desc["digest"],
                   "size": amd64_desc["size"], "platform": {"architecture": "amd64", "os": "linux"}}
    arm64_entry = dict(arm64_desc, platform={"architecture": "arm64", "os": "linux", "variant": "v8"})
    multi = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd64_entry, arm64_entry]}
    foreign = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm64_entry]}
    layout.tag("multi", layout.put_json(OCI_INDEX, multi))
    layout.tag("foreign", layout.put_json(OCI_INDEX, foreign))
    layout.tag("foreign-single", arm64_desc)
    zstd = dict(amd64)
    zstd["layers"] = [zstd_of(layout, read_blob(src, l["digest"])) for l in amd64["layers"]]
    layout.tag("zstd", layout.put_json(OCI_MANIFEST, zstd))
    layout.finish()
    subprocess.run(["chmod", "-R", "a+rX", outdir], check=True)


class Api:
    """The few registry calls an ORAS push makes (basic auth if given)."""

    def __init__(self, base, user=None, password=None, ca=None):
        self.base = base.rstrip("/")
        self.headers = {}
        if user:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.ctx = ssl.create_default_context(cafile=ca) if ca else None

    def call(self, method, url, data=None, headers=None):
        if not url.startswith("http"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method)
        for k, v in {**self.headers, **(headers or {})}.items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, context=self.ctx) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, _ = self.call("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self.call("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            die(f"POST blob upload to {repo}: {status} {body[:200]!r}")
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        status, _, body = self.call(
            "PUT", f"{location}{sep}digest={digest}", data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if status != 201:
            die(f"PUT blob {digest} to {repo}: {status} {body[:200]!r}")
        return digest


def push_sif(base, repo, tag, path, user=None, password_file=None, ca=None):
    password = None
    if password_file:
        with open(password_file) as f:
            password = f.read().strip()
    api = Api(base, user, password, ca)
    with open(path, "rb") as f:
        sif = f.read()
    # Apptainer's oras push: an empty JSON config of the SIF config type.
    config = b"{}"
    config_digest = api.push_blob(repo, config)
    sif_digest = api.push_blob(repo, sif)
    title = os.path.basename(path)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": SIF_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{
            "mediaType": SIF_LAYER, "digest": sif_digest, "size": len(sif),
            "annotations": {"org.opencontainers.image.title": title},
        }],
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    status, _, body = api.call("PUT", f"/v2/{repo}/manifests/{tag}", data,
                               {"Content-Type": OCI_MANIFEST})
    if status != 201:
        die(f"PUT manifest {repo}:{tag}: {status} {body[:300]!r}")
    print("sha256:" + hashlib.sha256(data).hexdigest())


def main(argv):
    if len(argv) >= 3 and argv[0] == "debian":
        debian(argv[1], argv[2])
    elif len(argv) >= 3 and argv[0] == "variants":
        variants(argv[1], argv[2])
    elif len(argv) >= 5 and argv[0] == "push-sif":
        opts = {}
        rest = argv[5:]
        while rest:
            flag, value, rest = rest[0], rest[1], rest[2:]
            opts[{"--user": "user", "--password-file": "password_file", "--ca": "ca"}[flag]] = value
        push_sif(argv[1], argv[2], argv[3], argv[4], **opts)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
