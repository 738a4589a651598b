"""Built-in architectures by name, as int8 :class:`~tvm_patchnet.graph.Graph` s with random weights.

No trained weights: :class:`~tvm_patchnet.builder.GraphBuilder` draws int8 weights from ``seed``,
which is enough for memory analysis and compilation. Names (case-insensitive, ``_`` = ``-``):

- ``mobilenetv2`` (width 1.0, 224x224 by default; torchvision channel rounding) and ``mbv2-rd``,
  the MCUNetV2 paper's receptive-field-redistributed MobileNetV2 (Figure 4; see ``mbv2_rd.py``);
- ``mnasnet`` / ``mnasnet-a1`` (MnasNet-A1 with its SE blocks) and ``fbnet-a``;
- every mit-han-lab/tinyml ``mcunet-configs`` design under its file stem minus ``_imagenet``:
  ``mcunet-*``, ``mbv2-w0.35-r144``, ``mbv2-w0.3-r80``, ``proxyless-w0.3-r176``,
  ``proxyless-w0.25-r112`` and ``proxyless-mobile``. Their default resolution is the config's own
  and they are fixed designs (``width`` must be 1.0). The ``-int4`` entries are separate TinyNAS
  designs searched for int4 (their block lists differ from the int8 namesakes); tvm-patchnet
  builds and profiles them in int8 like everything else.

Graphs carry explicit block numbers (see :mod:`tvm_patchnet.zoo.blocks`) and end in logits.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import PatchnetError
from ..graph import Graph
from .blocks import build_net
from .configs import CONFIGS, NetSpec
from .fbnet import FBNET_A
from .mbv2_rd import mbv2_rd
from .mnasnet import MNASNET_A1
from .mobilenetv2 import mobilenetv2

__all__ = ["get_architecture", "list_architectures"]

_Builder = Callable[[int | None, float | None, int], Graph]


def _fixed(spec: NetSpec) -> _Builder:
    """A builder for a fixed design: any resolution (pixels, default the spec's), width 1.0 only."""

    def build(resolution: int | None, width: float | None, seed: int) -> Graph:
        if width is not None and width != 1.0:
            raise PatchnetError(f"{spec.name}: a fixed design, width must be 1.0, got {width!r}")
        return build_net(spec, resolution, seed)

    return build


def _mobilenetv2(resolution: int | None, width: float | None, seed: int) -> Graph:
    return mobilenetv2(1.0 if width is None else width, 224 if resolution is None else resolution, seed)


_ARCHS: dict[str, _Builder] = {
    "mobilenetv2": _mobilenetv2,
    "mbv2-rd": lambda r, w, s: mbv2_rd(1.0 if w is None else w, 224 if r is None else r, s),
    "mnasnet": _fixed(MNASNET_A1),
    "fbnet-a": _fixed(FBNET_A),
    **{name: _fixed(spec) for name, spec in CONFIGS.items()},
}
_ALIASES = {"mnasnet-a1": "mnasnet"}


def list_architectures() -> list[str]:
    """Canonical names :func:`get_architecture` accepts, sorted (aliases such as ``mnasnet-a1`` also work)."""
    return sorted(_ARCHS)


def get_architecture(name: str, resolution: int | None = None, width: float | None = None, seed: int = 0) -> Graph:
    """Build architecture ``name`` for a ``resolution`` x ``resolution`` RGB input (pixels, 32 to 1024:
    :data:`~tvm_patchnet.zoo.blocks.MIN_RESOLUTION` / :data:`~tvm_patchnet.zoo.blocks.MAX_RESOLUTION`).

    ``width`` is a channel multiplier in (0, 4] (only ``mobilenetv2`` and ``mbv2-rd`` take one other than 1.0); ``None``
    means the architecture's default for both. Raises :class:`PatchnetError` (one line) on an
    unknown name or a width / resolution the architecture cannot take.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _ARCHS:
        import difflib

        close = difflib.get_close_matches(key, [*_ARCHS, *_ALIASES], n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise PatchnetError(f"unknown architecture '{name}'{hint}; known: {', '.join(list_architectures())}")
    graph = _ARCHS[key](resolution, width, seed)
    if key.endswith("-int4"):
        graph.meta["note"] = (f"{key} is MCUNet's int4 design, built, profiled and compiled in int8 here: its "
                              "weights take 2x the bytes they would in int4 (activations are int8 in both)")
    return graph
