"""PyTorch -> ONNX exports of the model classes real users bring (issue 8): an explicit pad before
stride-2 convolutions, three outputs, a model of one block. Each imports (post-training int8),
compiles layer by layer and patched where a split exists (``auto`` says why where none helps), and
runs on the emulated Cortex-M4 bit for bit equal to the host build of the same int8 graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.micro.conftest import NEEDS_GCC, NEEDS_QEMU
from tvm_patchnet.deploy import compile_model, run_model
from tvm_patchnet.frontend import load_model


class PadStem(nn.Module):
    """TinyEngine / TF-style explicit asymmetric padding before every stride-2 window."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2)
        self.dw1, self.pw1 = nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Conv2d(8, 16, 1)
        self.dw2, self.pw2 = nn.Conv2d(16, 16, 3, 2, groups=16), nn.Conv2d(16, 24, 1)
        self.c3 = nn.Conv2d(24, 24, 3, 2)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.relu6(self.c1(F.pad(x, (0, 1, 0, 1))))
        x = F.relu6(self.pw1(F.relu6(self.dw1(x))))
        x = F.relu6(self.pw2(F.relu6(self.dw2(F.pad(x, (0, 1, 0, 1))))))
        x = F.relu6(self.c3(F.pad(x, (1, 1, 1, 1))))
        return self.fc(x.mean((2, 3)))


class ThreeHeads(nn.Module):
    """A detection-style trunk with three outputs: a map, a flattened map and a class vector."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU6(), nn.Conv2d(8, 8, 3, 1, 1, groups=8),
                                   nn.ReLU6(), nn.Conv2d(8, 16, 1), nn.ReLU6(), nn.Conv2d(16, 16, 3, 2, 1),
                                   nn.ReLU6())
        self.box, self.obj, self.cls = nn.Conv2d(16, 4, 1), nn.Conv2d(16, 2, 3, 1, 1), nn.Linear(16, 5)

    def forward(self, x):
        t = self.trunk(x)
        return self.box(t), torch.flatten(self.obj(t), 1), self.cls(t.mean((2, 3)))


class OneBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 1, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


MODELS = {"pad-stem": (PadStem, 40), "three-heads": (ThreeHeads, 32), "one-block": (OneBlock, 16)}


def _export(tmp_path, name: str) -> str:
    cls, res = MODELS[name]
    torch.manual_seed(0)
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(cls().eval(), (torch.rand(1, 3, res, res),), path, dynamo=False)
    return path


def test_import_and_plans(tmp_path):
    """What each class resolves to: the pads fold, three outputs survive, one block cannot patch."""
    from tvm_patchnet.patch.search import resolve

    stem = load_model(_export(tmp_path, "pad-stem"))
    assert "pad" not in [op.kind for op in stem.ops]  # every explicit pad folded into its conv
    assert resolve(stem, "auto", "auto").plan is not None
    heads = load_model(_export(tmp_path, "three-heads"))
    assert len(heads.outputs) == 3
    one = load_model(_export(tmp_path, "one-block"))
    r = resolve(one, "auto", "auto")
    assert r.plan is None and "layer by layer" in r.note


@NEEDS_GCC
@NEEDS_QEMU
@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_runs_on_qemu_bit_exact_layer_by_layer_and_patched(tmp_path, name):
    path = _export(tmp_path, name)
    g = load_model(path)
    x = [np.random.default_rng(1).integers(-128, 128, size=g.t(n).shape, dtype=np.int8) for n in g.inputs]
    settings = [("layer", None, None), ("auto", "auto", "auto")]
    for tag, patches, split in settings:
        tar = str(tmp_path / f"{name}-{tag}.tar")
        res = compile_model(path, tar, patches=patches, split=split)
        assert (res.metadata["patch"] is None) == (name == "one-block" or tag == "layer"), res.note
        rep = run_model(tar, x=x, check=True)
        assert rep.reference_match is True, (name, tag, rep.mismatches)
        assert len(rep.outputs) == len(g.outputs)
