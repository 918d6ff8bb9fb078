#!/usr/bin/env bash
# OCI test images made by a real tool, offline: podman imports a root
# filesystem tarball of the demo image (with CMD, ENV, WORKDIR, a LABEL),
# then builds a second layer that deletes a file and replaces a directory
# (whiteouts), and saves both as docker-archive, oci-archive and an OCI
# layout directory. Run as root (podman, vfs storage in a private temp
# root; nothing touches the host's container storage).
#   tests/make-oci-fixtures.sh DEMO_ROOTFS_DIR OUTDIR
set -euo pipefail
demo=$1 out=$2
work=$(mktemp -d /var/tmp/rfake-oci.XXXXXX)
trap 'rm -rf "$work"' EXIT
podman=(podman --root "$work/root" --runroot "$work/run" --storage-driver vfs
        --cgroup-manager cgroupfs --log-level error)
mkdir -p "$out"
tar -C "$demo" -cf "$work/rootfs.tar" .
"${podman[@]}" import --quiet \
  --change 'CMD ["/bin/echo", "from-cmd"]' \
  --change 'ENV GREETING=hello-from-oci' \
  --change 'WORKDIR /etc' \
  --change 'LABEL org.example.fixture=base' \
  "$work/rootfs.tar" localhost/rfake-fixture:latest >/dev/null
cat >"$work/Containerfile" <<'CF'
FROM localhost/rfake-fixture:latest
RUN rm /etc/rfake-demo.txt && rm -rf /opt && mkdir /opt && echo layer-two > /opt/new.txt
ENV LAYER=two
LABEL org.example.fixture=layered
CF
# chroot isolation: no cgroups or network needed (none here).
"${podman[@]}" build --isolation chroot -q -t localhost/rfake-layered:latest \
  -f "$work/Containerfile" "$work" >/dev/null
for image in fixture layered; do
  "${podman[@]}" save --quiet --format docker-archive -o "$out/$image-docker.tar" "localhost/rfake-$image:latest"
  "${podman[@]}" save --quiet --format oci-archive -o "$out/$image-oci.tar" "localhost/rfake-$image:latest"
  rm -rf "$out/$image-oci-dir"
  "${podman[@]}" save --quiet --format oci-dir -o "$out/$image-oci-dir" "localhost/rfake-$image:latest"
done
chmod -R a+rX "$out"
echo "make-oci-fixtures: $(ls "$out" | tr '\n' ' ')"
