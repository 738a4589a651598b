"""The MCUNet-family block lists (mit-han-lab/tinyml ``mcunet-configs``), encoded in Python.

Each entry mirrors one JSON config (``<name>_imagenet.json``, or ``proxyless_mobile.json``): a 3x3
stride-2 ReLU6 stem conv, mobile inverted residual blocks, an optional 1x1 feature-mix conv and a
1000-way linear classifier. ``mid_ch`` is the config's ``mid_channels`` where given, otherwise
``round(in_ch * expand)`` as in tinyml's ``MBInvertedConvLayer``. ``ZeroLayer`` blocks (a zero
branch plus an identity shortcut, i.e. the identity) are left out. No file is read at run time;
``tests/zoo/test_zoo.py`` checks these literals against the JSON when the shared folder exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PatchnetError


@dataclass(frozen=True)
class ConvSpec:
    """A plain conv layer (stem or feature mix): ``out_ch`` channels, square ``kernel`` and ``stride`` in pixels."""

    out_ch: int
    kernel: int = 1
    stride: int = 1
    act: str | None = "relu6"


@dataclass(frozen=True)
class MBBlockSpec:
    """One mobile inverted residual (MBConv) block; channel counts in channels, kernel/stride in pixels.

    ``expand`` is the expansion ratio (1: no expand conv, then ``mid_ch == in_ch``), ``mid_ch``
    the exact expanded width, ``se`` the squeeze width of a squeeze-and-excitation module after
    the depthwise conv (0: none), ``act`` the fused activation of the expand and depthwise convs,
    ``shortcut`` an identity residual add (needs stride 1 and ``in_ch == out_ch``).
    """

    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    expand: float
    mid_ch: int
    se: int = 0
    act: str = "relu6"
    shortcut: bool = False

    def __post_init__(self) -> None:
        if self.shortcut and (self.stride != 1 or self.in_ch != self.out_ch):
            raise PatchnetError(f"MBConv {self.in_ch}->{self.out_ch} stride {self.stride} cannot have a shortcut")
        if self.expand == 1 and self.mid_ch != self.in_ch:
            raise PatchnetError(f"MBConv with expand 1 needs mid_ch == in_ch ({self.in_ch}), got {self.mid_ch}")


@dataclass(frozen=True)
class NetSpec:
    """A whole classifier: default input side ``resolution`` (pixels), layers, ``classifier`` output classes."""

    name: str
    resolution: int
    first_conv: ConvSpec
    blocks: tuple[MBBlockSpec, ...]
    feature_mix: ConvSpec | None
    classifier: int = 1000

    def __post_init__(self) -> None:
        ch = self.first_conv.out_ch
        for i, b in enumerate(self.blocks):
            if b.in_ch != ch:
                raise PatchnetError(f"{self.name}: block {i + 1} takes {b.in_ch} channels, gets {ch}")
            ch = b.out_ch


#: (in_ch, out_ch, kernel, stride, expand, mid_ch, shortcut)
_Row = tuple[int, int, int, int, int, int, bool]


def _net(name: str, resolution: int, stem: int, mix: int | None, classes: int, rows: tuple[_Row, ...]) -> NetSpec:
    blocks = tuple(MBBlockSpec(i, o, k, s, e, m, 0, "relu6", sc) for i, o, k, s, e, m, sc in rows)
    return NetSpec(name, resolution, ConvSpec(stem, 3, 2), blocks, None if mix is None else ConvSpec(mix), classes)


# Transcribed (by script) from the mcunet-configs JSON files; all ReLU6, no SE.
_SPECS = (
    _net("mbv2-w0.3-r80", 80, 16, 384, 1000, (
        (16, 8, 3, 1, 1, 16, False), (8, 8, 3, 2, 6, 48, False), (8, 8, 3, 1, 6, 48, True),
        (8, 16, 3, 2, 6, 48, False), (16, 16, 3, 1, 6, 96, True), (16, 16, 3, 1, 6, 96, True),
        (16, 24, 3, 2, 6, 96, False), (24, 24, 3, 1, 6, 144, True), (24, 24, 3, 1, 6, 144, True),
        (24, 24, 3, 1, 6, 144, True), (24, 32, 3, 1, 6, 144, False), (32, 32, 3, 1, 6, 192, True),
        (32, 32, 3, 1, 6, 192, True), (32, 48, 3, 2, 6, 192, False), (48, 48, 3, 1, 6, 288, True),
        (48, 48, 3, 1, 6, 288, True), (48, 96, 3, 1, 6, 288, False),
    )),
    _net("mbv2-w0.35-r144", 144, 16, 448, 1000, (
        (16, 8, 3, 1, 1, 16, False), (8, 8, 3, 2, 6, 48, False), (8, 8, 3, 1, 6, 48, True),
        (8, 16, 3, 2, 6, 48, False), (16, 16, 3, 1, 6, 96, True), (16, 16, 3, 1, 6, 96, True),
        (16, 24, 3, 2, 6, 96, False), (24, 24, 3, 1, 6, 144, True), (24, 24, 3, 1, 6, 144, True),
        (24, 24, 3, 1, 6, 144, True), (24, 32, 3, 1, 6, 144, False), (32, 32, 3, 1, 6, 192, True),
        (32, 32, 3, 1, 6, 192, True), (32, 56, 3, 2, 6, 192, False), (56, 56, 3, 1, 6, 336, True),
        (56, 56, 3, 1, 6, 336, True), (56, 112, 3, 1, 6, 336, False),
    )),
    _net("mcunet-10fps", 48, 24, None, 1000, (
        (24, 16, 3, 1, 1, 24, False), (16, 16, 5, 2, 4, 64, False), (16, 16, 3, 1, 3, 48, True),
        (16, 16, 3, 1, 4, 64, True), (16, 24, 7, 2, 5, 80, False), (24, 24, 5, 1, 4, 96, True),
        (24, 24, 5, 1, 5, 120, True), (24, 48, 7, 2, 5, 120, False), (48, 48, 5, 1, 4, 192, True),
        (48, 56, 3, 1, 5, 240, False), (56, 56, 5, 1, 4, 224, True), (56, 56, 3, 1, 5, 280, True),
        (56, 112, 3, 2, 6, 336, False), (112, 112, 5, 1, 4, 448, True), (112, 192, 3, 1, 6, 672, False),
    )),
    _net("mcunet-256kb-1mb-int4", 160, 32, None, 1000, (
        (32, 16, 3, 1, 1, 32, False), (16, 24, 7, 2, 3, 48, False), (24, 24, 3, 1, 6, 144, True),
        (24, 24, 5, 1, 5, 120, True), (24, 24, 7, 1, 3, 72, True), (24, 40, 7, 2, 5, 120, False),
        (40, 40, 5, 1, 3, 120, True), (40, 40, 7, 1, 4, 160, True), (40, 72, 3, 2, 5, 200, False),
        (72, 72, 7, 1, 4, 288, True), (72, 88, 5, 1, 6, 432, False), (88, 88, 5, 1, 4, 352, True),
        (88, 88, 7, 1, 3, 264, True), (88, 176, 3, 2, 5, 440, False), (176, 176, 5, 1, 4, 704, True),
        (176, 288, 5, 1, 4, 704, False),
    )),
    _net("mcunet-256kb-1mb", 160, 16, None, 1000, (
        (16, 8, 3, 1, 1, 16, False), (8, 16, 5, 2, 3, 24, False), (16, 16, 7, 1, 6, 96, True),
        (16, 16, 3, 1, 5, 80, True), (16, 16, 5, 1, 5, 80, True), (16, 24, 3, 2, 5, 80, False),
        (24, 24, 7, 1, 6, 144, True), (24, 24, 5, 1, 6, 144, True), (24, 40, 7, 2, 4, 96, False),
        (40, 40, 5, 1, 5, 200, True), (40, 48, 3, 1, 5, 200, False), (48, 48, 5, 1, 5, 240, True),
        (48, 48, 3, 1, 4, 192, True), (48, 96, 5, 2, 6, 288, False), (96, 96, 5, 1, 4, 384, True),
        (96, 96, 5, 1, 3, 288, True), (96, 96, 3, 1, 4, 384, True), (96, 160, 5, 1, 5, 480, False),
    )),
    _net("mcunet-320kb-1mb-int4", 176, 32, None, 1000, (
        (32, 16, 3, 1, 1, 32, False), (16, 24, 7, 2, 3, 48, False), (24, 24, 5, 1, 6, 144, True),
        (24, 24, 5, 1, 6, 144, True), (24, 40, 7, 2, 4, 96, False), (40, 40, 3, 1, 4, 160, True),
        (40, 40, 7, 1, 4, 160, True), (40, 40, 5, 1, 4, 160, True), (40, 72, 7, 2, 4, 160, False),
        (72, 72, 7, 1, 6, 432, True), (72, 72, 5, 1, 4, 288, True), (72, 88, 5, 1, 3, 216, False),
        (88, 88, 5, 1, 3, 264, True), (88, 88, 7, 1, 4, 352, True), (88, 176, 3, 2, 5, 440, False),
        (176, 176, 3, 1, 3, 528, True), (176, 288, 7, 1, 4, 704, False),
    )),
    _net("mcunet-320kb-1mb", 176, 16, None, 1000, (
        (16, 8, 3, 1, 1, 16, False), (8, 16, 7, 2, 3, 24, False), (16, 16, 3, 1, 5, 80, True),
        (16, 16, 7, 1, 5, 80, True), (16, 16, 5, 1, 4, 64, True), (16, 24, 5, 2, 5, 80, False),
        (24, 24, 5, 1, 5, 120, True), (24, 24, 5, 1, 5, 120, True), (24, 40, 3, 2, 5, 120, False),
        (40, 40, 7, 1, 6, 240, True), (40, 40, 5, 1, 4, 160, True), (40, 48, 5, 1, 5, 200, False),
        (48, 48, 7, 1, 5, 240, True), (48, 48, 3, 1, 5, 240, True), (48, 96, 3, 2, 6, 288, False),
        (96, 96, 7, 1, 5, 480, True), (96, 96, 3, 1, 4, 384, True), (96, 160, 7, 1, 5, 480, False),
    )),
    _net("mcunet-512kb-2mb-int4", 192, 48, None, 1000, (
        (48, 24, 3, 1, 1, 48, False), (24, 40, 7, 2, 3, 72, False), (40, 40, 3, 1, 5, 200, True),
        (40, 40, 3, 1, 5, 200, True), (40, 40, 3, 1, 5, 200, True), (40, 64, 5, 2, 6, 240, False),
        (64, 64, 7, 1, 4, 256, True), (64, 64, 5, 1, 5, 320, True), (64, 120, 7, 2, 5, 320, False),
        (120, 120, 7, 1, 4, 480, True), (120, 120, 3, 1, 4, 480, True), (120, 144, 5, 1, 4, 480, False),
        (144, 144, 3, 1, 4, 576, True), (144, 144, 7, 1, 3, 432, True), (144, 288, 3, 2, 5, 720, False),
        (288, 288, 7, 1, 3, 864, True), (288, 480, 5, 1, 4, 1152, False),
    )),
    _net("mcunet-512kb-2mb", 160, 32, None, 1000, (
        (32, 16, 3, 1, 1, 32, False), (16, 24, 7, 2, 3, 48, False), (24, 24, 3, 1, 5, 120, True),
        (24, 24, 5, 1, 4, 96, True), (24, 40, 7, 2, 5, 120, False), (40, 40, 3, 1, 4, 160, True),
        (40, 40, 7, 1, 4, 160, True), (40, 80, 7, 2, 3, 120, False), (80, 80, 3, 1, 3, 240, True),
        (80, 80, 7, 1, 3, 240, True), (80, 96, 3, 1, 4, 320, False), (96, 96, 5, 1, 3, 288, True),
        (96, 96, 5, 1, 3, 288, True), (96, 192, 7, 2, 4, 384, False), (192, 192, 7, 1, 3, 576, True),
        (192, 192, 5, 1, 3, 576, True), (192, 320, 5, 1, 4, 768, False),
    )),
    _net("mcunet-5fps", 96, 16, None, 1000, (
        (16, 8, 3, 1, 1, 16, False), (8, 16, 3, 2, 4, 32, False), (16, 16, 3, 1, 3, 48, True),
        (16, 24, 7, 2, 3, 48, False), (24, 24, 3, 1, 5, 120, True), (24, 40, 3, 2, 5, 120, False),
        (40, 40, 7, 1, 4, 160, True), (40, 48, 5, 1, 4, 160, False), (48, 48, 3, 1, 3, 144, True),
        (48, 48, 3, 1, 4, 192, True), (48, 96, 7, 2, 5, 240, False), (96, 96, 5, 1, 4, 384, True),
        (96, 96, 5, 1, 4, 384, True), (96, 160, 3, 1, 6, 576, False),
    )),
    _net("proxyless-w0.25-r112", 112, 8, 320, 1000, (
        (8, 8, 3, 1, 1, 8, False), (8, 8, 5, 2, 3, 24, False), (8, 8, 3, 1, 3, 24, True),
        (8, 16, 7, 2, 3, 24, False), (16, 16, 3, 1, 3, 48, True), (16, 16, 5, 1, 3, 48, True),
        (16, 16, 5, 1, 3, 48, True), (16, 24, 7, 2, 6, 96, False), (24, 24, 5, 1, 3, 72, True),
        (24, 24, 5, 1, 3, 72, True), (24, 24, 5, 1, 3, 72, True), (24, 24, 5, 1, 6, 144, False),
        (24, 24, 5, 1, 3, 72, True), (24, 24, 5, 1, 3, 72, True), (24, 24, 5, 1, 3, 72, True),
        (24, 48, 7, 2, 6, 144, False), (48, 48, 7, 1, 6, 288, True), (48, 48, 7, 1, 3, 144, True),
        (48, 48, 7, 1, 3, 144, True), (48, 80, 7, 1, 6, 288, False),
    )),
    _net("proxyless-w0.3-r176", 176, 16, 384, 1000, (
        (16, 8, 3, 1, 1, 16, False), (8, 16, 5, 2, 3, 24, False), (16, 16, 3, 1, 3, 48, True),
        (16, 16, 7, 2, 3, 48, False), (16, 16, 3, 1, 3, 48, True), (16, 16, 5, 1, 3, 48, True),
        (16, 16, 5, 1, 3, 48, True), (16, 24, 7, 2, 6, 96, False), (24, 24, 5, 1, 3, 72, True),
        (24, 24, 5, 1, 3, 72, True), (24, 24, 5, 1, 3, 72, True), (24, 32, 5, 1, 6, 144, False),
        (32, 32, 5, 1, 3, 96, True), (32, 32, 5, 1, 3, 96, True), (32, 32, 5, 1, 3, 96, True),
        (32, 64, 7, 2, 6, 192, False), (64, 64, 7, 1, 6, 384, True), (64, 64, 7, 1, 3, 192, True),
        (64, 64, 7, 1, 3, 192, True), (64, 96, 7, 1, 6, 384, False),
    )),
    _net("proxyless-mobile", 224, 32, 1280, 1000, (
        (32, 16, 3, 1, 1, 32, False), (16, 32, 5, 2, 3, 48, False), (32, 32, 3, 1, 3, 96, True),
        (32, 40, 7, 2, 3, 96, False), (40, 40, 3, 1, 3, 120, True), (40, 40, 5, 1, 3, 120, True),
        (40, 40, 5, 1, 3, 120, True), (40, 80, 7, 2, 6, 240, False), (80, 80, 5, 1, 3, 240, True),
        (80, 80, 5, 1, 3, 240, True), (80, 80, 5, 1, 3, 240, True), (80, 96, 5, 1, 6, 480, False),
        (96, 96, 5, 1, 3, 288, True), (96, 96, 5, 1, 3, 288, True), (96, 96, 5, 1, 3, 288, True),
        (96, 192, 7, 2, 6, 576, False), (192, 192, 7, 1, 6, 1152, True), (192, 192, 7, 1, 3, 576, True),
        (192, 192, 7, 1, 3, 576, True), (192, 320, 7, 1, 6, 1152, False),
    )),)

#: config name (file stem without ``_imagenet``, ``_`` as ``-``) -> spec
CONFIGS: dict[str, NetSpec] = {s.name: s for s in _SPECS}
