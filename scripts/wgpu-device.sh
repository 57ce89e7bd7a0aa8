#!/usr/bin/env bash
# The wgpu backend on an NVIDIA GPU, beside the CUDA backend: the op check, then prefill and
# decode throughput of two synthetic models of real shapes (Llama-3-8B Q4_0, SmolLM2-135M
# Q4_1), wgpu and cuda alternating so that both see the same machine state.
#
#   scripts/wgpu-device.sh PATH/TO/plumb [WORKDIR]
#
# Needs the Vulkan loader (libvulkan.so.1) and NVIDIA's Vulkan driver installed; when
# VK_DRIVER_FILES is unset and NVIDIA's manifest is at the usual container path, it is used.
# Every step has a time limit; the whole run stays near 6 minutes on an H200 (most of it the
# 8B model's synthesis and uploads). Figures print as bench's markdown tables.
set -uo pipefail
plumb=${1:?usage: scripts/wgpu-device.sh PATH/TO/plumb [WORKDIR]}
work=${2:-/tmp/plumb-wgpu-device}
mkdir -p "$work"
export PLUMB_HOME="$work/home"
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -e "$icd" ]; then
  export VK_DRIVER_FILES=$icd
fi
step() { # step SECONDS LABEL CMD...: runs CMD with a time limit, prints its wall time
  local limit=$1 label=$2 t0 rc
  shift 2
  echo "== $label: $*"
  t0=$(date +%s)
  timeout "$limit" "$@"
  rc=$?
  echo "== $label: exit $rc after $(( $(date +%s) - t0 )) s"
  return $rc
}
failed=0
step 120 check "$plumb" check --device wgpu || failed=1
big="$work/llama3-8b-q4_0.gguf"
small="$work/smollm2-135m-q4_1.gguf"
[ -e "$big" ] || step 120 synth "$plumb" synth --shape llama3-8b --quant q4_0 -o "$big" || failed=1
[ -e "$small" ] || step 30 synth "$plumb" synth --shape smollm2-135m --quant q4_1 -o "$small" || failed=1
for m in "$small" "$big"; do
  for round in 1 2; do
    for dev in wgpu cuda; do
      step 90 "bench $dev round $round" \
        "$plumb" bench -m "$m" --device "$dev" -p 512 -n 128 -r 2 --md || failed=1
    done
  done
done
exit $failed
