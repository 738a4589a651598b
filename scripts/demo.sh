#!/usr/bin/env bash
# The main job: see where MobileNetV2's memory goes (the MCUNetV2 paper's Figure 1).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
mkdir -p out
echo "== patchnet profile mobilenetv2 --resolution 224 (blocks; per-layer table in out/mbv2-224.txt)"
.venv/bin/patchnet profile mobilenetv2 --resolution 224 --plot out/mbv2-224.png > out/mbv2-224.txt
sed -n '1,27p' out/mbv2-224.txt
echo "   plot: out/mbv2-224.png"
echo
echo "== patchnet profile mbv2-w0.35-r144 (the paper's Table 2 baseline)"
.venv/bin/patchnet profile mbv2-w0.35-r144 | sed -n '1,4p'
