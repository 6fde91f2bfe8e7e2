"""`python -m benchmarks.rank_gate`: the reward-precision rank gate, run tiny on the CPU."""

import json

import pytest
import torch

from autogan_fast.search_space import validate_arch
from benchmarks import rank_gate


def test_draw_archs_gives_distinct_valid_stage2_architectures():
    archs = rank_gate.draw_archs(25, torch.Generator().manual_seed(0))
    assert len({tuple(a) for a in archs}) == 25
    for arch in archs:
        validate_arch(arch, stage=2)


def test_rank_gate_reports_every_precision_and_never_holds_on_too_few_architectures(tmp_path, capsys):
    archs = 3  # the gate needs >= 20 architectures, whatever the correlation of these three
    out = tmp_path / "gate.json"
    assert rank_gate.main(["--archs", str(archs), "--train-steps", "4", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["architectures"] == archs and result["trained_feature_net"]
    assert set(result["precisions"]) == {"fp32", "tf32", "bf16"}
    fp32 = result["precisions"]["fp32"]
    assert fp32["spearman_vs_fp32"] == pytest.approx(1.0) and fp32["max_rel_diff_vs_fp32"] == 0.0
    for row in result["precisions"].values():
        assert len(row["rewards"]) == archs and row["images_per_second"] > 0
        assert row["gate_holds"] is False
    assert "spearman" in capsys.readouterr().out
