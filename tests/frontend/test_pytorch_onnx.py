"""PyTorch / ONNX import (through TVM's Relax frontends) and post-training int8 quantization.

Float check: the float graph, run by the NumPy reference executor, equals torch (allclose).
int8 check: the quantized graph, run by ``runtime.run_graph`` (TVM-built integer kernels),
tracks the float model: max |int8 - float| is below 5% of the float output range and every
sample's cosine similarity is above 0.995 (the tiny MobileNetV2 measures 0.5% and 0.99997).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tvm_patchnet.errors import PatchnetError, UnsupportedOpsError
from tvm_patchnet.frontend.float_exec import run_float
from tvm_patchnet.frontend.torch_onnx import import_onnx, import_pytorch
from tvm_patchnet.ptq import dequantize_output, load_calibration, quantize, quantize_input
from tvm_patchnet.runtime import run_graph


class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, max(c // 4, 4), 1), nn.Conv2d(max(c // 4, 4), c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, se: bool):
        super().__init__()
        h = c_in * expand
        layers = [nn.Conv2d(c_in, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6()] if expand > 1 else []
        layers += [nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6()]
        self.body = nn.Sequential(*layers, SE(h) if se else nn.Identity(), nn.Conv2d(h, c_out, 1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            InvertedResidual(8, 8, 1, 1, False),
            InvertedResidual(8, 16, 2, 4, True),
            InvertedResidual(16, 16, 1, 4, True),
            nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class Odd(nn.Module):
    """Explicit pad, a ceil-mode average pool counting padding, a non-ReLU clip, a softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, 1, 0, dilation=2)
        self.fc = nn.Linear(6 * 6 * 6, 4)

    def forward(self, x):
        y = self.conv(nn.functional.pad(x, (1, 2, 2, 1)))
        y = nn.functional.hardtanh(nn.functional.avg_pool2d(y, 3, 2, 1, ceil_mode=True), -1.5, 2.0)
        return torch.softmax(self.fc(y.flatten(1)), -1)


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def mbv2():
    torch.manual_seed(0)
    return _randomize_bn(TinyMobileNetV2())


def _data(n: int, shape=(3, 24, 24), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _int8_vs_float(qg, model, x: np.ndarray) -> tuple[float, float, float]:
    """int8 graph (through run_graph) vs torch over ``x``: max abs error, the float output's
    range (max - min over all samples) and the worst per-sample cosine similarity."""
    ref = _torch(model, x)
    err, cos = 0.0, 1.0
    for i in range(len(x)):
        y = dequantize_output(qg, run_graph(qg, [quantize_input(qg, _nhwc(x[i: i + 1]))])[0]).reshape(-1)
        r = ref[i].reshape(-1)
        err = max(err, float(np.abs(y - r).max()))
        cos = min(cos, float(y @ r / (np.linalg.norm(y) * np.linalg.norm(r))))
    return err, float(ref.max() - ref.min()), cos


def test_pytorch_float_graph_matches_torch(mbv2):
    x = _data(8)
    g = import_pytorch(mbv2, x[:1])
    kinds = [op.kind for op in g.ops]
    assert "depthwise_conv2d" in kinds and "logistic" in kinds and "mul" in kinds and "add" in kinds
    assert kinds.count("conv2d") == 11 and kinds.count("depthwise_conv2d") == 3  # every BatchNorm folded
    assert g.ops[0].block == 0 and g.num_blocks == 5  # stem, three inverted residuals, head
    np.testing.assert_allclose(run_float(g, _nhwc(x))[0], _torch(mbv2, x), rtol=1e-4, atol=1e-4)


def test_onnx_float_graph_matches_torch(mbv2, tmp_path):
    # The TorchScript exporter needs no onnxscript (not installed); dynamo=True would.
    path = str(tmp_path / "mbv2.onnx")
    x = _data(8)
    torch.onnx.export(mbv2, (torch.from_numpy(x[:1]),), path, dynamo=False, input_names=["image"],
                      output_names=["logits"])
    g = import_onnx(path)
    np.testing.assert_allclose(run_float(g, _nhwc(x))[0], _torch(mbv2, x), rtol=1e-4, atol=1e-4)
    assert (g.inputs, g.outputs) == (["image"], ["logits"])  # the names the user's code knows
    qg = quantize(g, _data(8, seed=2))
    assert (qg.inputs, qg.outputs) == (["image"], ["logits"])  # and the int8 graph keeps them


def test_int8_graph_tracks_float_model(mbv2):
    g = import_pytorch(mbv2, _data(1))
    qg = quantize(g, _data(64, seed=2))
    assert qg.t(qg.inputs[0]).dtype == "int8"
    conv = next(op for op in qg.ops if op.kind == "conv2d")
    assert qg.t(conv.inputs[1]).scale.shape == (8,) and qg.t(conv.inputs[2]).dtype == "int32"
    err, span, cos = _int8_vs_float(qg, mbv2, _data(6, seed=3))
    assert err < 0.05 * span and cos > 0.995, (err, span, cos)


def test_pad_pool_clip_softmax(tmp_path):
    torch.manual_seed(1)
    model = Odd().eval()
    x = _data(4, (3, 12, 12))
    g = import_pytorch(model, x[:1])
    assert [op.kind for op in g.ops][:3] == ["conv2d", "pad", "avg_pool2d"]  # explicit pad folded into the conv
    np.testing.assert_allclose(run_float(g, _nhwc(x))[0], _torch(model, x), rtol=1e-4, atol=1e-5)
    qg = quantize(g, _data(32, (3, 12, 12), seed=2))
    err, _, cos = _int8_vs_float(qg, model, x[:2])
    assert err < 2 / 256 and cos > 0.995, (err, cos)  # softmax output: int8 steps of 1/256


def _onnx_model(path: str, nodes, inits, out_shape, in_shape=("N", 3, 8, 8)) -> str:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_onnx_helper_ops_match_reference(tmp_path):
    """Pad / Clip / MaxPool / GlobalAveragePool / Gemm, which TVM lowers to TE kernels or tuples."""
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "w": rng.standard_normal((4, 3, 3, 3), np.float32),
             "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
             "fw": rng.standard_normal((5, 4), np.float32), "fb": rng.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("Conv", ["p", "w"], ["c"], strides=[2, 2]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("GlobalAveragePool", ["m"], ["gp"]), helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    path = _onnx_model(str(tmp_path / "ops.onnx"), nodes, inits, ("N", 5))
    g = import_onnx(path)
    assert [op.kind for op in g.ops] == ["conv2d", "max_pool2d", "avg_pool2d", "reshape", "fully_connected"]
    assert g.ops[0].attrs["act"] == "relu6" and g.ops[0].attrs["padding"] == (1, 1, 1, 1)
    x = _data(2, (3, 8, 8))
    ref = ReferenceEvaluator(onnx.load(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(g, _nhwc(x))[0], ref, rtol=1e-4, atol=1e-4)


def test_unsupported_ops_are_all_listed(tmp_path):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=2)

        def forward(self, x):
            return torch.tanh(self.conv(x)) + nn.functional.gelu(x)

    with pytest.raises(UnsupportedOpsError) as err:
        import_pytorch(Bad().eval(), _data(1, (4, 8, 8)))
    msg = str(err.value)
    assert len(err.value.ops) == 3 and "\n" not in msg
    for op in ("op 0 relax.nn.conv2d", "relax.tanh", "relax.nn.gelu"):
        assert op in msg
    nodes = [helper.make_node("Celu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("LpNormalization", ["b"], ["y"])]
    with pytest.raises(UnsupportedOpsError, match=r"2 unsupported op\(s\): op 0 Celu, op 2 LpNormalization"):
        import_onnx(_onnx_model(str(tmp_path / "bad.onnx"), nodes, {}, ("N", 3, 8, 8)))


def test_bad_inputs_give_one_line_errors(mbv2, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    cases = [lambda: import_onnx(str(corrupt)),
             lambda: import_pytorch(mbv2, _data(1, (1, 24, 24))),
             lambda: import_onnx(_onnx_model(str(tmp_path / "r.onnx"), [helper.make_node("Relu", ["x"], ["y"])], {},
                                             ("N", 3, 8, 8)),
                                 input_shape=(1, 4, 8, 8)),
             lambda: quantize(import_pytorch(mbv2, _data(1)), _data(4, (3, 8, 8)))]
    for case in cases:
        with pytest.raises(PatchnetError) as err:
            case()
        assert "\n" not in str(err.value)


def test_calibration_folder(tmp_path):
    from PIL import Image

    np.save(tmp_path / "a.npy", _data(3, (3, 8, 8)))  # NCHW batch
    np.save(tmp_path / "b.npy", _data(1, (8, 8, 3))[0])  # one NHWC sample
    Image.fromarray(np.full((16, 20, 3), 255, np.uint8)).save(tmp_path / "c.png")
    data = load_calibration(str(tmp_path), (1, 8, 8, 3), num_samples=10)
    assert data.shape == (5, 8, 8, 3) and np.allclose(data[4], 1.0)
