"""MbV2-RD against MCUNetV2 Table 1 (224x224, 4x4 patches): 63x63 patch, ~3% overhead, MbV2's peak."""

from __future__ import annotations

import warnings

import pytest

from tvm_patchnet.errors import PatchnetError
from tvm_patchnet.patch.planner import plan_patches
from tvm_patchnet.zoo import get_architecture


@pytest.fixture(autouse=True)
def _quiet_scale_overflow():
    # GraphBuilder's random-weight scales overflow float32 in deep nets (see tests/zoo/test_zoo.py).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def test_table1_figures():
    g_rd, g_mbv2 = get_architecture("mbv2-rd", resolution=224), get_architecture("mobilenetv2", resolution=224)
    rd, mbv2 = plan_patches(g_rd, 4, 4), plan_patches(g_mbv2, 4, 5)
    assert rd.input_patch == (63, 63) and mbv2.input_patch == (75, 75)
    assert rd.mac_overhead < 0.05 < mbv2.mac_overhead
    assert rd.peak_bytes == mbv2.peak_bytes == 176_400
    assert rd.per_layer_peak_bytes == mbv2.per_layer_peak_bytes == 1_404_928
    # the same split point: both stages hand the rest of the network a 28x28x32 map
    assert g_rd.t(rd.stage_output).shape == g_mbv2.t(mbv2.stage_output).shape == (1, 28, 28, 32)


def test_split_4_is_the_lowest_peak_with_the_lowest_overhead():
    g = get_architecture("mbv2-rd")
    plans = [plan_patches(g, 4, n) for n in range(1, 7)]
    best = min(plans, key=lambda p: (p.peak_bytes, p.mac_overhead))
    assert best.split == 4


def test_macs_close_to_mobilenetv2():
    rd = plan_patches(get_architecture("mbv2-rd"), 4, 4)
    mbv2 = plan_patches(get_architecture("mobilenetv2"), 4, 5)
    assert rd.total_macs == pytest.approx(mbv2.total_macs, rel=0.02)
    assert rd.stage_macs == pytest.approx(62.3e6, rel=0.01)  # Table 1: 73M patched at +18% -> ~62M


def test_width_and_resolution():
    g = get_architecture("mbv2-rd", resolution=160, width=0.5)
    assert g.name == "mbv2-rd-w0.5"
    assert g.t("input").shape == (1, 160, 160, 3)
    assert g.t(g.ops[0].outputs[0]).shape == (1, 80, 80, 16)
    with pytest.raises(PatchnetError, match="width"):
        get_architecture("mbv2-rd", width=0)
