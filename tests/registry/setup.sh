#!/usr/bin/env bash
# The test registries: two real registry servers (Debian's docker-registry,
# the CNCF distribution registry) on loopback, with the test images pushed
# by skopeo and tests/registry/oci-images.py. Run as root (tests/run.sh does,
# before the tests; by hand too):
#   tests/registry/setup.sh start STAGE     (re)start both, push the images, write STAGE/registry/env
#   tests/registry/setup.sh stop STAGE      stop both (only the servers STAGE's pid files name)
#
#   PLAIN   http://127.0.0.1:$RFAKE_REGISTRY_PORT (15000), anonymous
#   TLS     https://registry.rfake.test:$RFAKE_REGISTRY_TLS_PORT (15443) on 127.0.0.1,
#           a certificate from a CA made here, htpasswd (bcrypt) user rfake with a
#           random password. The name (in /etc/hosts, tests/setup-host.sh) is not
#           a loopback address or "localhost", which rfake speaks plain http to.
#
# Inputs (defaults for tests/run.sh's stage):
#   RFAKE_REGISTRY_OCI      the OCI fixtures of tests/make-oci-fixtures.sh   ($STAGE/oci)
#   RFAKE_REGISTRY_SIF      a SIF to push as an ORAS artifact                ($STAGE/images/demo.sif)
#   RFAKE_REGISTRY_DEBIAN_ROOT  a Debian 12 root (/var/tmp/rfake-mpi-image/rootfs, the MPI image's)
#   RFAKE_REGISTRY_CACHE    where the Debian image's layout is kept between runs (/var/tmp/rfake-registry-cache)
# The repositories and what each holds: tests/registry/repos.
# STAGE/registry/env: the variables the tests read (one NAME=VALUE a line, no spaces).
# STAGE/registry/{plain,tls}/access.log: the access logs (combined format), readable by all.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-} stage=${2:-}
if [ -z "$cmd" ] || [ -z "$stage" ]; then
  echo "usage: tests/registry/setup.sh start|stop STAGE" >&2
  exit 2
fi
reg=$stage/registry
port=${RFAKE_REGISTRY_PORT:-15000}
tls_port=${RFAKE_REGISTRY_TLS_PORT:-15443}
tls_host=registry.rfake.test

say() { echo "registry-setup: $*" >&2; }
die() { say "$*"; exit 1; }

# Stop the servers this stage started: only a pid whose command line names
# this stage's config (a stale pid file must not kill an unrelated process).
stop() {
  local name pid
  for name in plain tls; do
    [ -f "$reg/$name/pid" ] || continue
    pid=$(cat "$reg/$name/pid")
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$reg/$name/config.yml"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$reg/$name/pid"
  done
}

if [ "$cmd" = stop ]; then
  stop
  exit 0
fi
[ "$cmd" = start ] || die "unknown command $cmd (start or stop)"
[ "$(id -u)" = 0 ] || die "run as root (it writes the stage and starts the servers)"

oci=${RFAKE_REGISTRY_OCI:-$stage/oci}
sif=${RFAKE_REGISTRY_SIF:-$stage/images/demo.sif}
debian_root=${RFAKE_REGISTRY_DEBIAN_ROOT:-/var/tmp/rfake-mpi-image/rootfs}
cache=${RFAKE_REGISTRY_CACHE:-/var/tmp/rfake-registry-cache}
for f in "$oci/layered-oci-dir/index.json" "$sif" "$debian_root/etc/os-release"; do
  [ -e "$f" ] || die "missing $f (see the inputs in $0)"
done
for tool in docker-registry skopeo htpasswd openssl curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (tests/setup-host.sh installs it)"
done
getent hosts "$tls_host" | grep -q '^127\.0\.0\.1 ' \
  || die "$tls_host does not resolve to 127.0.0.1 (tests/setup-host.sh adds it to /etc/hosts)"

start_ms=$(($(date +%s%N) / 1000000))
stop
for p in "$port" "$tls_port"; do
  if ss -Htln "sport = :$p" | grep -q .; then
    die "port $p on this host is taken (set RFAKE_REGISTRY_PORT / RFAKE_REGISTRY_TLS_PORT)"
  fi
done
rm -rf "$reg"
mkdir -p "$reg/plain/storage" "$reg/tls/storage" "$reg/tls/certs.d" "$reg/work"

# --- TLS: a CA and a server certificate for the name, 127.0.0.1 and localhost.
tls=$reg/tls
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" -days 30 -subj "/CN=rfake test registry CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$tls/server.key" -out "$reg/work/server.csr" -subj "/CN=$tls_host" 2>/dev/null
cat >"$reg/work/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$tls_host,DNS:localhost,IP:127.0.0.1
EOF
openssl x509 -req -in "$reg/work/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
  -CAcreateserial -out "$tls/server.pem" -days 30 -extfile "$reg/work/server.ext" 2>/dev/null
cp "$tls/ca.pem" "$tls/certs.d/ca.crt"   # skopeo's --dest-cert-dir wants *.crt
password=$(openssl rand -hex 16)
printf '%s\n' "$password" >"$tls/password"
htpasswd -Bbn rfake "$password" >"$tls/htpasswd" 2>/dev/null
chmod 0600 "$tls/ca.key" "$tls/server.key"

# --- The servers' configurations (docs: distribution's configuration.md).
cat >"$reg/plain/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $reg/plain/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(openssl rand -hex 16)
EOF
cat >"$reg/tls/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $reg/tls/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$tls_port
  secret: $(openssl rand -hex 16)
  tls:
    certificate: $tls/server.pem
    key: $tls/server.key
auth:
  htpasswd:
    realm: rfake-test
    path: $tls/htpasswd
EOF

# The access log (combined format, one line a request) is the server's
# stdout; its own info log (with each request too) is stderr.
for name in plain tls; do
  : >"$reg/$name/access.log"
  : >"$reg/$name/registry.log"
  chmod 0644 "$reg/$name/access.log" "$reg/$name/registry.log"
  docker-registry serve "$reg/$name/config.yml" \
    >>"$reg/$name/access.log" 2>>"$reg/$name/registry.log" </dev/null &
  echo $! >"$reg/$name/pid"
done

# Ready when /v2/ answers: 200 on the plain one, 401 (no credentials) on the other.
wait_ready() {
  local name=$1 url=$2 want=$3 code
  shift 3
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true)
    [ "$code" = "$want" ] && return 0
    kill -0 "$(cat "$reg/$name/pid")" 2>/dev/null || break
    sleep 0.1
  done
  cat "$reg/$name/registry.log" >&2
  die "the $name registry did not come up on $url (got ${code:-nothing}; its log is above)"
}
wait_ready plain "http://127.0.0.1:$port/v2/" 200
wait_ready tls "https://$tls_host:$tls_port/v2/" 401 --cacert "$tls/ca.pem"

# --- The images.
mkdir -p "$cache"
python3 "$here/oci-images.py" debian "$debian_root" "$cache/debian-oci"
python3 "$here/oci-images.py" variants "$oci/layered-oci-dir" "$reg/work/variants"
skopeo=(skopeo --insecure-policy --tmpdir "$reg/work")
declare -A src=(
  [demo]="oci:$oci/layered-oci-dir"
  [zstd]="oci:$reg/work/variants:zstd"
  [debian]="oci:$cache/debian-oci:12"
  [multi]="oci:$reg/work/variants:multi"
  [foreign]="oci:$reg/work/variants:foreign"
  [foreign-single]="oci:$reg/work/variants:foreign-single"
)
envfile=$reg/env.tmp
{
  echo "RFAKE_TEST_REGISTRY=127.0.0.1:$port"
  echo "RFAKE_TEST_REGISTRY_TLS=$tls_host:$tls_port"
  echo "RFAKE_TEST_REGISTRY_CA=$tls/ca.pem"
  echo "RFAKE_TEST_REGISTRY_USER=rfake"
  echo "RFAKE_TEST_REGISTRY_PASSWORD=$password"
  echo "RFAKE_TEST_REGISTRY_LOG=$reg/plain/access.log"
  echo "RFAKE_TEST_REGISTRY_TLS_LOG=$reg/tls/access.log"
  # The Debian root's OCI layout, as a build SOURCE (tests/recipe_run.rs).
  echo "RFAKE_TEST_DEBIAN_OCI=$cache/debian-oci"
} >"$envfile"

push() {  # REPO:TAG SOURCE REGISTRY
  local ref=$1 source=$2 where=$3 dest opts=() digest
  if [ "$where" = plain ]; then
    dest=127.0.0.1:$port
    opts=(--dest-tls-verify=false)
  else
    dest=$tls_host:$tls_port
    opts=(--dest-cert-dir "$tls/certs.d" --dest-creds "rfake:$password")
  fi
  if [ "$source" = sif ]; then
    [ "$where" = plain ] || die "sif is pushed to the plain registry only"
    python3 "$here/oci-images.py" push-sif "http://$dest" "${ref%:*}" "${ref##*:}" "$sif" \
      >"$reg/work/digest"
  else
    case $source in
      multi|foreign) opts+=(--all) ;;
    esac
    "${skopeo[@]}" copy -q "${opts[@]}" --digestfile "$reg/work/digest" \
      "${src[$source]}" "docker://$dest/$ref" >/dev/null
  fi
  digest=$(cat "$reg/work/digest")
  echo "$where $ref $digest" >>"$reg/pushed"
}
while read -r ref source where _; do
  case $ref in ''|'#'*) continue ;; esac
  for w in ${where//,/ }; do
    push "$ref" "$source" "$w"
  done
done <"$here/repos"

# The digests the tests name (manifests as pushed; the blobs from the
# layouts): RFAKE_TEST_REGISTRY_DIGEST_<IMAGE> a manifest or index,
# ..._CONFIG_<IMAGE> and ..._LAYERS_<IMAGE> (comma-separated, in order).
python3 - "$reg/pushed" "$cache/debian-oci" "$reg/work/variants" "$oci/layered-oci-dir" >>"$envfile" <<'PY'
import json, os, sys
pushed, debian, variants, demo = sys.argv[1:5]
def blob(layout, digest):
    return json.load(open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1])))
def tagged(layout, name=None):
    for m in json.load(open(os.path.join(layout, "index.json")))["manifests"]:
        if name is None or m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
            return m["digest"]
def image(key, layout, manifest_digest, ref=None):
    # The blobs listed are the layout's: the manifest must have gone in unchanged.
    if ref and pushed_digest[("plain", ref)] != manifest_digest:
        sys.exit(f"registry-setup: {ref} was pushed as {pushed_digest[('plain', ref)]}, not as the layout's {manifest_digest}")
    m = blob(layout, manifest_digest)
    print(f"RFAKE_TEST_REGISTRY_CONFIG_{key}={m['config']['digest']}")
    print(f"RFAKE_TEST_REGISTRY_LAYERS_{key}={','.join(l['digest'] for l in m['layers'])}")
    print(f"RFAKE_TEST_REGISTRY_SIZES_{key}={','.join(str(l['size']) for l in m['layers'])}")
pushed_digest = {}
for line in open(pushed):
    where, ref, digest = line.split()
    pushed_digest[(where, ref)] = digest
    if where == "plain" and "/" not in ref:
        key = ref.replace(":", "_").replace("-", "_").upper()
        print(f"RFAKE_TEST_REGISTRY_DIGEST_{key}={digest}")
image("DEMO", demo, tagged(demo), "demo:1")
image("DEBIAN", debian, tagged(debian, "12"), "debian:12")
image("ZSTD", variants, tagged(variants, "zstd"), "zstd:1")
multi = blob(variants, tagged(variants, "multi"))
for m in multi["manifests"]:
    arch = m["platform"]["architecture"].upper()
    print(f"RFAKE_TEST_REGISTRY_DIGEST_MULTI_{arch}={m['digest']}")
    image(f"MULTI_{arch}", variants, m["digest"])
PY
mv "$envfile" "$reg/env"
chmod 0755 "$stage" "$reg" "$reg/plain" "$reg/tls"
chmod 0644 "$reg/env" "$tls/ca.pem" "$reg/pushed"
rm -rf "$reg/work"
elapsed=$(($(date +%s%N) / 1000000 - start_ms))
say "ready in $((elapsed / 1000)).$(printf %03d $((elapsed % 1000))) s: http://127.0.0.1:$port, https://$tls_host:$tls_port; $reg/env"
