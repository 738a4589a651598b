#!/usr/bin/env bash
# The main job (MCUNetV2's Table 2 baseline): MobileNetV2-w0.35 at 144x144 needs more SRAM layer by
# layer than an STM32F412 has (256 KB); with automatic patch-based inference it fits. Both are run
# on an emulated Cortex-M4 (QEMU mps2-an386) given the F412's memory map; no hardware needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
mkdir -p out
PN=.venv/bin/patchnet

echo "== where the memory goes (the paper's rule; per-layer bars against per-patch bars: out/mbv2-w035-r144.png)"
$PN profile mbv2-w0.35-r144 --sram 256KB --plot out/mbv2-w035-r144.png | sed -n '1,10p'
echo
echo "== layer by layer: compile, then run on qemu-m4 with the nucleo-f412zg memory map"
$PN compile mbv2-w0.35-r144 --target cortex-m4 --board qemu-m4 -o out/mbv2-layer.tar
if $PN run out/mbv2-layer.tar --memory-map nucleo-f412zg; then
  echo "unexpected: the layer-by-layer model fits" >&2
  exit 1
fi
echo "   (expected: it does not fit)"
echo
echo "== with patches: --patches auto --split auto under the F412's 256 KB"
$PN compile mbv2-w0.35-r144 --target cortex-m4 --board qemu-m4 --patches auto --split auto --sram 256KB \
  -o out/mbv2-patched.tar
$PN run out/mbv2-patched.tar --memory-map nucleo-f412zg --check
