#!/usr/bin/env bash
# On a machine with a real NVIDIA GPU: run nvidia-smi and a CUDA check
# through rfake --device (CDI) and say pass/fail for each. Skips with one
# line (status 0) where there is no GPU, as on the test machines.
#   tests/gpu/check.sh [IMAGE]
# IMAGE: an image with CUDA and python3+torch, or one with deviceQuery in
# PATH (default: docker://nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04, which
# has neither: only nvidia-smi and the libcuda probe are run then).
# Each check runs through --device (CDI) and through --nv.
set -uo pipefail
rfake=${RFAKE_BIN:-rfake}
image=${1:-docker://nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no NVIDIA GPU or driver on this machine (nvidia-smi -L fails)"
  exit 0
fi
if ! ls /etc/cdi/*.yaml /etc/cdi/*.json /var/run/cdi/*.yaml /var/run/cdi/*.json >/dev/null 2>&1; then
  echo "note: no CDI spec; as root: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
fi
fails=0
check() { # NAME COMMAND...
  local name=$1; shift
  if out=$("$@" 2>&1); then echo "pass: $name"; else echo "FAIL: $name"; echo "$out" | tail -5 | sed 's/^/  /'; fails=$((fails + 1)); fi
}
check "nvidia-smi --device nvidia.com/gpu=all" "$rfake" exec --device nvidia.com/gpu=all "$image" nvidia-smi -L
check "only gpu 0 with --device nvidia.com/gpu=0" sh -c \
  "[ \"\$('$rfake' exec --device nvidia.com/gpu=0 '$image' nvidia-smi -L | wc -l)\" = 1 ]"
# What --nv will use here (a CDI spec, nvidia-container-cli, the linker cache).
"$rfake" doctor 2>/dev/null | grep -E '^(ok|PROBLEM) +(GPU devices|NVIDIA driver|CDI specs|--nv) ' | sed 's/^/  /'
check "nvidia-smi --nv" "$rfake" exec --nv "$image" nvidia-smi -L
check "nvidia-smi --nv --cleanenv keeps CUDA_VISIBLE_DEVICES" sh -c \
  "[ \"\$(CUDA_VISIBLE_DEVICES=0 '$rfake' exec --nv --cleanenv '$image' sh -c 'echo \$CUDA_VISIBLE_DEVICES')\" = 0 ]"
if "$rfake" exec "$image" sh -c 'command -v deviceQuery' >/dev/null 2>&1; then
  for how in "--device nvidia.com/gpu=all" "--nv"; do
    # shellcheck disable=SC2086
    check "deviceQuery $how" "$rfake" exec $how "$image" deviceQuery
  done
elif "$rfake" exec "$image" python3 -c 'import torch' >/dev/null 2>&1; then
  for how in "--device nvidia.com/gpu=all" "--nv"; do
    # shellcheck disable=SC2086
    check "torch.cuda $how" "$rfake" exec $how "$image" \
      python3 -c 'import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))'
  done
else
  echo "note: $image has neither deviceQuery nor torch: CUDA itself not exercised"
fi
echo "check.sh: $fails failed"
[ "$fails" = 0 ]
