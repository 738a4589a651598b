#!/usr/bin/env bash
# The main job: where MobileNetV2's memory goes, and what patch-based inference does to it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
mkdir -p out
echo "== patchnet profile mobilenetv2 --resolution 224 --patches auto --split auto (per-layer table: out/mbv2-224.txt)"
.venv/bin/patchnet profile mobilenetv2 --resolution 224 --patches auto --split auto --plot out/mbv2-224.png \
  > out/mbv2-224.txt
sed -n '1,33p' out/mbv2-224.txt
echo "   plot (the paper's Figure 1): out/mbv2-224.png"
echo
echo "== patchnet profile mbv2-w0.35-r144 --sram 256KB (the paper's Table 2 baseline on an STM32F412)"
.venv/bin/patchnet profile mbv2-w0.35-r144 --sram 256KB | sed -n '1,10p'
echo
echo "== patched vs per-layer execution on the host, bit for bit"
.venv/bin/python examples/patch_api.py mbv2-w0.35-r144 --patches 3 --split 4 | grep -v "^    "
