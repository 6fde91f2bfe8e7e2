"""A run that diverges stops in one line (exit status 3) naming the step, the settings and the last good
checkpoint, which stays intact; nothing is written from the diverged state, and the log stays strict JSON.
Settings that would diverge or crash at once (inf, NaN) are refused before anything is written."""

import dataclasses
import json
import math

import pytest
import torch
from cli_helpers import run_cli_captured, without_collapse_warnings
from test_search_cli import TINY as SEARCH_TINY
from test_train_evaluate import TINY as TRAIN_TINY

from autogan_fast import search, train
from autogan_fast.config import SearchConfig, TrainConfig, preset_config
from autogan_fast.data import DeviceImageData, load_images
from autogan_fast.divergence import first_non_finite
from autogan_fast.engines.eager import LossWindow, SharedGAN, train_shared
from autogan_fast.errors import DivergedError, UsageError
from autogan_fast.nas.controller import Controller
from autogan_fast.runs.checkpoint import load_checkpoint

DIVERGED = 3  # the exit status of a run that diverged (bad input is 2)


def strict_events(run_dir):
    """Every line of the run's log, parsed as strict JSON: a bare NaN or Infinity token fails."""
    def refuse(token):
        raise ValueError(f"{token} is not strict JSON")

    return [json.loads(line, parse_constant=refuse) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def one_line(stderr):
    stderr = without_collapse_warnings(stderr)
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    return stderr


def with_learning_rates(checkpoint, lr, optimizers):
    """Rewrite a checkpoint as if its run had been started with G and D learning rates `lr`."""
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["g_lr"] = state["config"]["d_lr"] = lr
    for opt in optimizers(state):
        for group in opt["param_groups"]:
            group["lr"] = lr
    torch.save(state, checkpoint)


# --------------------------------------------------------------------------------------------- search

def test_a_search_diverging_in_its_first_iteration_stops_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli_captured(search.main, [*SEARCH_TINY, "--g-lr", "1e30", "--d-lr", "1e30",
                                                          "--out", out], capsys)
    assert code == DIVERGED and stdout == ""
    assert "diverged at search iteration 0 (stage 0)" in one_line(stderr)
    assert "--g-lr 1e+30 --d-lr 1e+30" in stderr and "no checkpoint was written" in stderr
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", ".lock"}  # no checkpoint, samples, result
    events = strict_events(out)
    assert events[0]["event"] == "shared_train" and events[0]["d_loss"] is None  # NaN is logged as null
    assert events[-1]["event"] == "diverged" and events[-1]["search_iter"] == 0


def test_a_search_diverging_later_keeps_the_last_checkpoint_intact(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli_captured(search.main, [*SEARCH_TINY, "--out", out, "--stop-after", "0"], capsys)[0] == 0
    with_learning_rates(out / "checkpoint.pt", 1e30, lambda s: (s["gan"]["gen_opt"], s["gan"]["dis_opt"]))
    before = (out / "checkpoint.pt").read_bytes()
    code, _, stderr = run_cli_captured(search.main, ["--resume", out, "--quiet"], capsys)
    assert code == DIVERGED
    assert "diverged at search iteration 1 (stage 1): the shared GAN's loss means are not finite" in one_line(stderr)
    assert "--g-lr 1e+30 --d-lr 1e+30" in stderr
    assert f"the last good checkpoint, {out / 'checkpoint.pt'} (after search iteration 0), is intact" in stderr
    assert (out / "checkpoint.pt").read_bytes() == before
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["iter_000.png"]
    assert not (out / "result.json").exists()
    events = strict_events(out)
    assert events[-1]["event"] == "diverged" and events[-1]["search_iter"] == 1


def test_a_diverged_controller_is_caught_before_it_samples(tmp_path, capsys):
    """A huge --ctrl-lr is legal input: its logits overflow after one update, which used to crash
    multinomial mid-run ("probability tensor contains inf"); it is a divergence of the controller.
    Where it overflows first depends on the rewards (an update whose advantage is 0 moves nothing): with
    these settings, the demo's n_critic 5 and AutoGAN's resets (the two flags below), at the final scoring,
    after the last checkpoint: the path this test is for."""
    out = tmp_path / "run"
    argv = [*SEARCH_TINY, "--ctrl-lr", "1e30", "--no-fresh-gan-at-grow", "--no-reset-keeps-healthy-g", "--out", out]
    assert run_cli_captured(search.main, [*argv, "--stop-after", "1"], capsys)[0] == 0
    code, _, stderr = run_cli_captured(search.main, ["--resume", out, "--quiet"], capsys)
    assert code == DIVERGED
    stderr = "\n".join(line for line in stderr.splitlines() if "beams kept for stage" not in line)
    assert "final scoring" in one_line(stderr) and "the controller's logits are not finite" in stderr
    assert "--ctrl-lr 1e+30" in stderr and "(after search iteration 2), is intact" in stderr
    checkpoint = load_checkpoint(out / "checkpoint.pt")  # iteration 2's, the last good one: whole and finite
    assert checkpoint["search_iter"] == 3 and first_non_finite(checkpoint) is None
    assert not (out / "result.json").exists()
    strict_events(out)


def test_controller_samples_report_non_finite_logits_instead_of_failing():
    torch.manual_seed(0)
    controller = Controller.for_stage(0, "mlas", 8)
    assert bool(controller.sample(4).finite)
    with torch.no_grad():
        controller.decoders[1].weight.fill_(float("inf"))
    samples = controller.sample(4)  # multinomial would refuse these probabilities
    assert not bool(samples.finite) and samples.archs.shape == (4, 4)


# --------------------------------------------------------------------------------------------- train

def test_a_training_diverging_before_its_first_checkpoint_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, stderr = run_cli_captured(train.main, [*TRAIN_TINY, "--g-lr", "1e30", "--d-lr", "1e30", "--out", out],
                                       capsys)
    assert code == DIVERGED
    assert "the training diverged at G iteration 2: the mean losses" in one_line(stderr)
    assert "--g-lr 1e+30 --d-lr 1e+30" in stderr and "no checkpoint was written" in stderr
    assert {p.name for p in out.iterdir()} == {"config.json", "log.jsonl", ".lock"}
    assert strict_events(out)[-1]["event"] == "diverged"


def test_a_training_diverging_later_keeps_checkpoint_and_best_intact(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli_captured(train.main, [*TRAIN_TINY, "--out", out, "--stop-after", "2"], capsys)[0] == 0
    with_learning_rates(out / "checkpoint.pt", 1e30, lambda s: (s["gen_opt"], s["dis_opt"]))
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "best.pt")}
    code, _, stderr = run_cli_captured(train.main, ["--resume", out, "--quiet"], capsys)
    assert code == DIVERGED
    assert "diverged at G iteration 4" in one_line(stderr) and "--g-lr 1e+30 --d-lr 1e+30" in stderr
    assert f"{out / 'checkpoint.pt'} (G iteration 2, best.pt beside it), is intact" in stderr
    assert {name: (out / name).read_bytes() for name in before} == before
    assert [p.name for p in (out / "samples").iterdir()] == ["iter_000002.png"]
    assert not (out / "result.json").exists()
    events = strict_events(out)
    assert events[-1] == {"event": "diverged", "iter": 4, "error": stderr.split("error: ", 1)[1].strip()}


# --------------------------------------------------------------------------------------------- the pieces

def test_a_diverged_phase_ends_at_the_first_reset_check_with_non_finite_means():
    """NaN compares false with any threshold: the reset rule counts a non-finite window variance as due,
    so the phase stops early instead of training a NaN network on, and its loss means say why."""
    torch.manual_seed(0)
    config = preset_config("demo", gf_dim=4, df_dim=4, latent_dim=8, dis_bs=16, gen_bs=16, shared_epoch=5,
                           n_critic=1, dynamic_reset_window=4).validate()
    data = DeviceImageData(load_images("digits")[:160], "cpu")
    gan = SharedGAN.create(config, torch.device("cpu"))
    with torch.no_grad():
        gan.gen.l1.weight.fill_(float("nan"))
    archs = [[0, 1, 1, 0]] * (5 * data.steps_per_epoch(config.dis_bs))
    summary = train_shared(gan, data, config, 0, archs, LossWindow(4, "cpu"), LossWindow(4, "cpu"))
    assert summary.dynamic_reset and summary.steps == 4 < len(archs)
    assert math.isnan(summary.d_loss) and math.isnan(summary.g_loss)


def test_first_non_finite_names_the_entry():
    state = {"gan": {"gen": {"w": torch.ones(3)}, "opt": {"state": {0: {"exp_avg_sq": torch.tensor([1.0, math.inf])}}}},
             "rng": {"cpu": torch.zeros(4, dtype=torch.uint8)}, "iter": 3, "fixed_z": torch.zeros(2)}
    assert first_non_finite(state) == "gan.opt.state.0.exp_avg_sq"
    state["gan"]["opt"]["state"][0]["exp_avg_sq"] = torch.ones(2)
    assert first_non_finite(state) is None


def test_diverged_error_is_a_usage_error_with_its_own_status():
    assert issubclass(DivergedError, UsageError)
    assert DivergedError.exit_status == DIVERGED != UsageError.exit_status == 2


def float_settings(cls):
    return [f.name for f in dataclasses.fields(cls) if f.type in ("float", float)]


@pytest.mark.parametrize("name", float_settings(SearchConfig))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_search_setting_must_be_finite(name, value):
    with pytest.raises(UsageError, match=rf"--{name.replace('_', '-')} must be a finite number"):
        preset_config("demo", **{name: value}).validate()


@pytest.mark.parametrize("name", float_settings(TrainConfig))
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_every_float_train_setting_must_be_finite(name, value):
    with pytest.raises(UsageError, match=rf"--{name.replace('_', '-')} must be a finite number"):
        preset_config("demo", TrainConfig, **{name: value}).validate()
