"""Argument types shared by subcommands."""

from __future__ import annotations

import argparse
import json
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KIB|K|MB|MIB|M)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20}


def byte_size(text: str) -> int:
    """'256KB' -> 262144 (kB = 1024 bytes, as MCU datasheets count SRAM)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (e.g. 256KB, 1MB, 200000)")
    n = int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive size")
    return n


def _boards() -> dict[str, str]:
    from ..archive.layout import TARGET_BOARDS

    return {b: t for t, bs in TARGET_BOARDS.items() for b in bs}


TARGETS = ("cortex-m4", "cortex-m7")
BOARDS = tuple(_boards())
#: boards whose memory a QEMU board can take (``--memory-map``)
MEMORY_MAPS = tuple(b for b in BOARDS if b.startswith("nucleo-"))


def warn_of(args: argparse.Namespace):
    """Where a subcommand's warnings go: nowhere with -q, else None (the library's default: a
    line on stderr)."""
    return (lambda line: None) if args.quiet else None


def choice(kind: str, names) -> callable:
    """An argparse ``type`` that accepts one of ``names`` and says "did you mean" otherwise (used
    with ``choices=names``, which lists them in the help)."""
    import difflib

    def check(text: str) -> str:
        if text in names:
            return text
        close = difflib.get_close_matches(text.strip().lower(), list(names), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise argparse.ArgumentTypeError(f"unknown {kind} '{text}'{hint}; choose from {', '.join(names)}")

    check.__name__ = kind
    return check


def add_board_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--board", type=choice("board", BOARDS), choices=BOARDS, metavar="BOARD",
                   help=f"{help} (one of: {', '.join(BOARDS)})")


def add_memory_map_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory-map", type=choice("memory map", MEMORY_MAPS), choices=MEMORY_MAPS, metavar="BOARD",
                   help="QEMU boards: link and run with a Nucleo's SRAM and flash sizes (one of: "
                        f"{', '.join(MEMORY_MAPS)})")


def add_model_args(p: argparse.ArgumentParser, optional: bool = False) -> None:
    p.add_argument("model", nargs="?" if optional else None, help="a .tflite (int8) or .onnx file, or a built-in architecture name "
                                 "(see 'patchnet profile --list')")
    p.add_argument("--resolution", type=int, help="input resolution of a built-in architecture (pixels)")
    p.add_argument("--width", type=float, help="width multiplier of a built-in architecture")


def add_calibration_args(p: argparse.ArgumentParser) -> None:
    """--calibration / --mean / --std: how a float (.onnx) model is quantized."""
    p.add_argument("--calibration", metavar="PATH",
                   help="float (.onnx) models: inputs to calibrate the int8 activations on: an .npy / .npz array "
                        "(N, C, H, W) float32, preprocessed as the model expects, or a folder of images (PNG, JPEG, "
                        "BMP; scaled to 0..1, resized to the input size, then --mean/--std); the first 64 are "
                        "used. Default: 8 random inputs (a warning: fine for memory figures, not for accuracy)")
    p.add_argument("--mean", type=_floats, metavar="M[,M,M]",
                   help="with an image folder: per-channel mean subtracted from 0..1 pixels (e.g. 0.485,0.456,0.406)")
    p.add_argument("--std", type=_floats, metavar="S[,S,S]",
                   help="with an image folder: per-channel standard deviation to divide by (e.g. 0.229,0.224,0.225)")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
