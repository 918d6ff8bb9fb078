#!/usr/bin/env bash
# A fake GPU driver for tests/gpu.rs, on a machine without a GPU:
#   tests/gpu/make-fake-driver.sh DIR      (as root: it makes device nodes)
# DIR/driver  a driver root laid out as the host's: libcuda.so.550.54.15
#             (soname libcuda.so.1) and libnvidia-ml.so.550.54.15 (soname
#             libnvidia-ml.so.1), tiny shared objects with their links, and
#             fake nvidia-smi and nvidia-container-cli scripts in usr/bin;
#             a fake ROCm in opt/rocm: libhsa-runtime64.so.1.13.0 (soname
#             libhsa-runtime64.so.1) and a rocm-smi script;
# DIR/dev     fake device nodes made with mknod (NVIDIA's major 195, the DRM
#             major 226 for AMD; kfd's major is dynamic on real hosts): no
#             driver is behind them, so binding works and opening fails;
# DIR/ld.so.cache  a linker cache of the driver's libraries (for --nv);
# DIR/cdi     CDI specs as `nvidia-ctk cdi generate --driver-root DIR/driver
#             --dev-root DIR` writes them (YAML, the toolkit 1.17 hooks) and an
#             AMD one (JSON);
# DIR/image   a directory image: static busybox, the dynamic linker and libc,
#             and /opt/probe/cuda-probe, which dlopen()s libcuda.so.1 and
#             prints the file it got and the driver version it reports;
# DIR/image-compat  the same with an NGC-style CUDA compat library of a newer
#             branch: /usr/local/cuda/compat/libcuda.so.560.28.03.
# Everything is readable by every user; nothing outside DIR is touched.
set -euo pipefail
dir=${1:?usage: make-fake-driver.sh DIR}
src=$(cd "$(dirname "$0")" && pwd)
version=550.54.15
libdir=usr/lib/x86_64-linux-gnu
rm -rf "$dir"
mkdir -p "$dir/driver/$libdir" "$dir/driver/usr/bin" "$dir/driver/opt/rocm/lib" "$dir/driver/opt/rocm/bin" "$dir/dev/dri" "$dir/cdi" "$dir/build"
dir=$(cd "$dir" && pwd)
drv=$dir/driver

# The libraries: a function each, so the probe can tell them apart.
cat >"$dir/build/cuda.c" <<EOF
int cuDriverGetVersion(int *v) { *v = 12040; return 0; }
const char *rfake_fake_driver(void) { return "rfake fake libcuda $version"; }
EOF
cat >"$dir/build/nvml.c" <<'EOF'
int nvmlInit_v2(void) { return 0; }
EOF
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$drv/$libdir/libcuda.so.$version" "$dir/build/cuda.c"
gcc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o "$drv/$libdir/libnvidia-ml.so.$version" "$dir/build/nvml.c"
ln -s "libcuda.so.$version" "$drv/$libdir/libcuda.so.1"
ln -s libcuda.so.1 "$drv/$libdir/libcuda.so"
ln -s "libnvidia-ml.so.$version" "$drv/$libdir/libnvidia-ml.so.1"
echo 'int hsa_init(void) { return 0; }' >"$dir/build/hsa.c"
gcc -shared -fPIC -Wl,-soname,libhsa-runtime64.so.1 -o "$drv/opt/rocm/lib/libhsa-runtime64.so.1.13.0" "$dir/build/hsa.c"
ln -s libhsa-runtime64.so.1.13.0 "$drv/opt/rocm/lib/libhsa-runtime64.so.1"
# The image's CUDA compat library (image-compat): a newer branch than the host's.
compat=560.28.03
cat >"$dir/build/compat.c" <<EOF
int cuDriverGetVersion(int *v) { *v = 12060; return 0; }
const char *rfake_fake_driver(void) { return "rfake fake compat libcuda $compat"; }
EOF
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/build/libcuda.so.$compat" "$dir/build/compat.c"

cat >"$drv/usr/bin/nvidia-smi" <<EOF
#!/bin/sh
# Fake nvidia-smi: what the tests look for, no GPU behind it.
echo "NVIDIA-SMI $version   Driver Version: $version   CUDA Version: 12.4 (rfake fake driver)"
for n in /dev/nvidia[0-9]*; do [ -e "\$n" ] && echo "GPU \${n#/dev/nvidia}: \$n"; done
exit 0
EOF
cat >"$drv/usr/bin/nvidia-container-cli" <<EOF
#!/bin/sh
# Fake nvidia-container-cli: \`list\` names the driver's files as the real one does.
case "\$*" in
  *list*)
    for n in $dir/dev/nvidiactl $dir/dev/nvidia-uvm $dir/dev/nvidia0 $dir/dev/nvidia1; do echo "\$n"; done
    echo "$drv/usr/bin/nvidia-smi"
    echo "$drv/$libdir/libcuda.so.$version"
    echo "$drv/$libdir/libnvidia-ml.so.$version" ;;
  *--version*|*-V*) echo "cli-version: 1.17.0 (rfake fake)" ;;
  *) echo "nvidia-container-cli: fake: \$*" >&2; exit 1 ;;
esac
EOF
cat >"$drv/opt/rocm/bin/rocm-smi" <<'EOF'
#!/bin/sh
# Fake rocm-smi: no GPU behind it.
echo "ROCm System Management Interface (rfake fake)"
for n in /dev/dri/renderD*; do [ -e "$n" ] && echo "GPU: $n"; done
exit 0
EOF
chmod 0755 "$drv/usr/bin/nvidia-smi" "$drv/usr/bin/nvidia-container-cli" "$drv/opt/rocm/bin/rocm-smi"

# Device nodes (root only): NVIDIA 195/0, 195/1, 195/255 (nvidiactl); the
# UVM and DRM ones on their usual majors.
mknod -m 0666 "$dir/dev/nvidia0" c 195 0
mknod -m 0666 "$dir/dev/nvidia1" c 195 1
mknod -m 0666 "$dir/dev/nvidiactl" c 195 255
mknod -m 0666 "$dir/dev/nvidia-uvm" c 510 0
mknod -m 0666 "$dir/dev/kfd" c 511 0
mknod -m 0666 "$dir/dev/dri/card0" c 226 0
mknod -m 0666 "$dir/dev/dri/renderD128" c 226 128
mknod -m 0666 "$dir/dev/dri/card1" c 226 1
mknod -m 0666 "$dir/dev/dri/renderD129" c 226 129

# The test linker cache (ldconfig -C): what --nv finds without nvidia-container-cli.
printf '%s\n' "$drv/$libdir" "$drv/opt/rocm/lib" >"$dir/ld.so.conf"
ldconfig -C "$dir/ld.so.cache" -f "$dir/ld.so.conf" -X

# CDI specs.
sed -e "s|@DIR@|$dir|g" -e "s|@VERSION@|$version|g" "$src/nvidia.yaml.in" >"$dir/cdi/nvidia.yaml"
sed -e "s|@DIR@|$dir|g" "$src/amd.json.in" >"$dir/cdi/amd.json"

# The image.
img=$dir/image
mkdir -p "$img"/{bin,lib64,lib/x86_64-linux-gnu,$libdir,etc,opt/probe,dev,proc,sys,tmp,root,home}
chmod 1777 "$img/tmp"
cp /usr/bin/busybox "$img/bin/busybox"
for t in sh ls cat stat readlink env test echo id grep head wc true; do ln -s busybox "$img/bin/$t"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$img/lib64/"
cp -L /lib/x86_64-linux-gnu/libc.so.6 "$img/lib/x86_64-linux-gnu/"
printf '/lib/x86_64-linux-gnu\n/%s\n' "$libdir" >"$img/etc/ld.so.conf"
ldconfig -r "$img"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$img/etc/passwd"
printf 'root:x:0:\n' >"$img/etc/group"
gcc -O2 -o "$img/opt/probe/cuda-probe" "$src/cuda-probe.c"
cp -a "$img" "$dir/image-compat"
mkdir -p "$dir/image-compat/usr/local/cuda/compat"
cp "$dir/build/libcuda.so.$compat" "$dir/image-compat/usr/local/cuda/compat/"
ln -s "libcuda.so.$compat" "$dir/image-compat/usr/local/cuda/compat/libcuda.so.1"
rm -rf "$dir/build"
chmod -R a+rX "$dir"
echo "$dir"
