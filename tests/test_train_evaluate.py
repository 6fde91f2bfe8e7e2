"""`python -m autogan_fast.train` and `python -m autogan_fast.evaluate` end to end on the digits, at toy sizes,
plus the derived generator they are built on."""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from autogan_reference import AuthorsGenerator, full_checkpoint, randomize, save_as_torch1
from cli_helpers import full_disk_for, lock_held_elsewhere, run_cli_captured, run_to_success

from autogan_fast import evaluate, load_generator, train
from autogan_fast.config import TrainConfig, preset_config
from autogan_fast.data import load_images
from autogan_fast.errors import UsageError
from autogan_fast.metrics import load_feature_net
from autogan_fast.metrics.fid import load_fid_stats, save_fid_stats
from autogan_fast.metrics.reference import cache_path, dataset_statistics, reference_statistics
from autogan_fast.metrics.scoring import score_generator
from autogan_fast.models import SharedGenerator, init_weights
from autogan_fast.models.derived import DerivedGenerator
from autogan_fast.nas.collapse import stage_collapsed
from autogan_fast.pretrained import CHECKPOINT_FORMAT as TRAIN_CHECKPOINT_FORMAT
from autogan_fast.training import loop as training_loop
from autogan_fast.training.loop import TrainState, tail_mean

# Four G iterations, scored after 2 and 4 on 100 images: every file and event appears, in about a second.
TINY = ["--gf-dim", "8", "--df-dim", "8", "--latent-dim", "8", "--gen-bs", "16", "--dis-bs", "16",
        "--n-critic", "2", "--max-iter", "4", "--val-freq", "2", "--num-eval-imgs", "100",
        "--eval-batch-size", "50", "--num-grid-images", "4", "--seed", "3", "--quiet"]
METRICS = ("inception_score", "inception_score_std", "fid")


run = run_cli_captured


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted tiny training run, shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("train") / "full"
    run_to_success(train.main, [*TINY, "--out", out, "--json"])
    return out


def read_log(run_dir):
    return [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]


def without_wall_time(event):
    return {k: v for k, v in event.items() if k != "wall_seconds"}


# --------------------------------------------------------------------------------------------- derived generator

@pytest.mark.parametrize("arch", [
    train.PAPER_ARCH,                                   # AutoGAN's published CIFAR-10 cell: pre-act, skips
    (0, 1, 2, 1, 0, 2, 2, 1, 1, 0, 1, 2, 1, 3),         # post-act, BN / IN, deconv shortcut and skip deconvs
    (1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0),         # fused BN pre-activation path, no skips at all
    (0, 0, 0, 1, 1, 2, 0, 1, 1, 0, 2, 1, 0, 1),         # bilinear everywhere, mixed block types
], ids=["paper", "post-deconv", "pre-bn-noskip", "bilinear-mixed"])
def test_derived_generator_is_the_shared_one_pruned_to_its_arch(arch):
    torch.manual_seed(0)
    derived = DerivedGenerator(arch, latent_dim=8, gf_dim=8, bottom_width=2)
    shared = SharedGenerator(latent_dim=8, gf_dim=8, bottom_width=2)
    init_weights(derived)
    init_weights(shared)
    _, unexpected = shared.load_state_dict(derived.state_dict(), strict=False)
    assert unexpected == []  # same parameter names, a subset of the shared ones
    z = torch.randn(5, 8)
    for training in (True, False):
        derived.train(training)
        shared.train(training)
        out = derived(z)
        assert out.shape == (5, 3, 16, 16)  # bottom_width * 8
        assert torch.equal(out, shared(z, arch))
    derived.train()
    derived(z).square().mean().backward()
    unused = [name for name, p in derived.named_parameters() if p.grad is None]
    assert unused == []  # nothing the architecture does not run was kept
    assert sum(p.numel() for p in derived.parameters()) < sum(p.numel() for p in shared.parameters())


@pytest.mark.parametrize("arch, reason", [
    ((1, 0, 1, 1), "one cell (stage 0) is not a full generator"),
    ((1, 0, 1, 1, 1, 0, 0, 1, 1), "two cells (stage 1) are not a full generator"),
    ((1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 4), "skip mask 4 names a cell that does not exist"),
])
def test_derived_generator_needs_a_valid_three_cell_arch(arch, reason):
    with pytest.raises(UsageError):
        DerivedGenerator(arch, latent_dim=8, gf_dim=8, bottom_width=2)


def test_derived_generator_arch_is_fixed():
    gen = DerivedGenerator(train.PAPER_ARCH, latent_dim=8, gf_dim=8, bottom_width=2)
    z = torch.randn(2, 8)
    assert torch.equal(gen(z, list(train.PAPER_ARCH)), gen(z))  # its own: accepted
    with pytest.raises(ValueError, match="fixed"):
        gen(z, [0] * 14)


def test_ema_is_the_moving_average_of_parameters_and_a_copy_of_buffers():
    config = preset_config("demo", TrainConfig, gf_dim=4, df_dim=4, latent_dim=4, ema=0.75).validate()
    state = TrainState.create(config, train.PAPER_ARCH, torch.device("cpu"))
    before = [p.clone() for p in state.ema.parameters()]
    with torch.no_grad():
        for p in state.gen.parameters():
            p.add_(1.0)
        for b in state.gen.buffers():
            b.add_(3)
    state.update_ema()
    for old, new, p in zip(before, state.ema.parameters(), state.gen.parameters(), strict=True):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * p)
    for b_ema, b in zip(state.ema.buffers(), state.gen.buffers(), strict=True):
        assert torch.equal(b_ema, b)


# --------------------------------------------------------------------------------------------- train

def test_run_folder_holds_every_file(full_run):
    assert {p.name for p in full_run.iterdir()} == {"config.json", "log.jsonl", "checkpoint.pt", "best.pt",
                                                    "samples", "result.json", ".lock"}
    modes = {p.stat().st_mode for p in full_run.rglob("*") if p.is_file()}
    assert len(modes) == 1  # atomic writes (checkpoints, results, grids) get the umask's mode, as the log does
    assert sorted(p.name for p in (full_run / "samples").iterdir()) == ["iter_000002.png", "iter_000004.png"]
    config = json.loads((full_run / "config.json").read_text())
    assert config["gf_dim"] == 8 and config["preset"] == "demo" and config["bottom_width"] == 2
    assert config["arch"] == list(train.PAPER_ARCH)  # the default architecture
    result = json.loads((full_run / "result.json").read_text())
    assert {*METRICS, "arch", "wall_seconds", "device"} <= set(result)
    assert result["arch"] == list(train.PAPER_ARCH) and result["device"] == "cpu" and result["iter"] == 4
    assert 1.0 <= result["inception_score"] <= 10.0 and math.isfinite(result["fid"]) and result["fid"] > 0
    assert result["best"]["fid"] == min(e["fid"] for e in read_log(full_run) if e["event"] == "eval")
    evals = [e for e in read_log(full_run) if e["event"] == "eval"]  # 2, all within the default tail of 3
    assert result["tail_mean"] == {"inception_score": pytest.approx(sum(e["inception_score"] for e in evals) / 2),
                                   "fid": pytest.approx(sum(e["fid"] for e in evals) / 2), "evals": 2, "iters": [2, 4]}
    events = [(e["event"], e["iter"]) for e in read_log(full_run)]
    assert events == [("eval", 2), ("eval", 4), ("done", 4)]
    checkpoint = torch.load(full_run / "checkpoint.pt", weights_only=True)
    assert checkpoint["format"] == TRAIN_CHECKPOINT_FORMAT and checkpoint["iter"] == 4
    assert {"gen", "dis", "ema", "gen_opt", "dis_opt", "rng", "best"} <= set(checkpoint)
    assert torch.load(full_run / "best.pt", weights_only=True)["iter"] == result["best"]["iter"]


@pytest.mark.parametrize("tail, expected", [
    (1, (3.0, 30.0)),  # the last evaluation alone
    (2, (2.5, 25.0)),  # the mean of the last two
    (9, (2.0, 20.0)),  # a tail longer than the run: every evaluation
])
def test_tail_mean_averages_the_last_evaluations(tail, expected):
    events = [{"event": "eval", "iter": i, "inception_score": float(i), "fid": 10.0 * i} for i in (1, 2, 3)]
    result = tail_mean([*events, {"event": "done", "iter": 3}], tail)
    assert (result["inception_score"], result["fid"]) == pytest.approx(expected)
    assert result["evals"] == min(tail, 3)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(full_run, tmp_path, capsys):
    out = tmp_path / "resumed"
    code, _, err = run(train.main, [*TINY, "--out", out, "--stop-after", "1"], capsys)
    assert code == 0 and "--resume" in err
    assert not (out / "result.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iter"] == 2  # the first checkpoint >= 1
    code, stdout, _ = run(train.main, ["--resume", out, "--quiet", "--json"], capsys)
    assert code == 0
    resumed, uninterrupted = json.loads(stdout), json.loads((full_run / "result.json").read_text())
    assert without_wall_time(json.loads((out / "result.json").read_text())) == without_wall_time(uninterrupted)
    assert resumed["run_dir"] == str(out)
    assert [without_wall_time(e) for e in read_log(out)] == [without_wall_time(e) for e in read_log(full_run)]


def test_a_collapsed_training_is_warned_about_and_marked(tmp_path, capsys, monkeypatch):
    """`--g-lr 10 --d-lr 10` ends at IS 1.000 (every image one class) and used to exit 0 in silence: the
    search's collapse test (nas/collapse.py, reused) on the evaluations' IS warns on stderr, even with
    --quiet, and marks result.json; a training the test passes is not marked."""
    out = tmp_path / "run"
    code, stdout, stderr = run(train.main, [*TINY, "--g-lr", "10", "--d-lr", "10", "--out", out, "--json"], capsys)
    assert code == 0
    assert stage_collapsed([e["inception_score"] for e in read_log(out) if e["event"] == "eval"])  # the premise
    assert stderr.startswith("warning: the training collapsed (IS ") and len(stderr.strip().splitlines()) == 1
    assert json.loads((out / "result.json").read_text())["collapsed"] is True
    assert json.loads(stdout)["collapsed"] is True and read_log(out)[-1]["collapsed"] is True
    monkeypatch.setattr(training_loop, "stage_collapsed", lambda values: False)  # the detector's verdict decides
    code, _, stderr = run(train.main, [*TINY, "--out", tmp_path / "kept", "--json"], capsys)
    assert code == 0 and stderr == ""
    assert json.loads((tmp_path / "kept" / "result.json").read_text())["collapsed"] is False


def snapshot(run_dir):
    """Every file of a run folder with its content and time, but the lock file (each run writes its pid)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def test_resuming_a_finished_run_prints_its_result_and_writes_nothing(full_run, tmp_path, capsys):
    out = tmp_path / "finished"
    shutil.copytree(full_run, out)
    before = snapshot(out)
    code, stdout, stderr = run(train.main, ["--resume", out, "--json"], capsys)
    assert code == 0 and len(stderr.strip().splitlines()) == 1 and "is finished" in stderr
    assert json.loads(stdout) == {**json.loads((full_run / "result.json").read_text()), "run_dir": str(out)}
    assert snapshot(out) == before  # in particular, no second `done` event


def test_resume_completes_a_run_killed_before_its_result(full_run, tmp_path, capsys):
    """Killed after logging `done` but before writing result.json: the resume writes the result, and
    the log still holds one `done`."""
    out = tmp_path / "killed"
    shutil.copytree(full_run, out)
    (out / "result.json").unlink()
    code, _, stderr = run(train.main, ["--resume", out, "--quiet"], capsys)
    assert code == 0, stderr
    assert [e["event"] for e in read_log(out)] == ["eval", "eval", "done"]
    assert without_wall_time(json.loads((out / "result.json").read_text())) == without_wall_time(
        json.loads((full_run / "result.json").read_text()))


def test_a_second_resume_of_a_running_training_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train.main, [*TINY, "--out", out, "--stop-after", "1"], capsys)[0] == 0
    with lock_held_elsewhere(out) as running:
        before = snapshot(out)
        code, _, stderr = run(train.main, ["--resume", out, "--quiet"], capsys)
        after = snapshot(out)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"{out} is in use by another run (pid {running.pid} on " in stderr
    assert after == before


def test_a_run_killed_before_its_first_checkpoint_resumes_as_a_fresh_start(full_run, tmp_path, capsys,
                                                                         monkeypatch):
    """Killed (Ctrl-C here) while scoring before the first checkpoint: config.json and nothing else to
    resume from; --resume starts afresh with the saved settings and architecture, as uninterrupted."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(training_loop, "score_generator", interrupted)
        assert run(train.main, [*TINY, "--out", out], capsys)[0] == 130
    assert not (out / "checkpoint.pt").exists()
    code, _, stderr = run(train.main, ["--resume", out, "--quiet", "--arch", "autogan_cifar10_b"], capsys)
    assert code == 2 and "the architecture cannot change" in stderr
    code, _, stderr = run(train.main, ["--resume", out, "--quiet"], capsys)
    assert code == 0, stderr
    assert without_wall_time(json.loads((out / "result.json").read_text())) == without_wall_time(
        json.loads((full_run / "result.json").read_text()))
    assert [without_wall_time(e) for e in read_log(out)] == [without_wall_time(e) for e in read_log(full_run)]


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes(full_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run(train.main, [*TINY, "--out", out, "--stop-after", "2"], capsys)[0] == 0
    before = (out / "checkpoint.pt").read_bytes()
    with monkeypatch.context() as patch:
        full_disk_for(patch, "checkpoint.pt")
        code, _, stderr = run(train.main, ["--resume", out, "--quiet"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "checkpoint.pt: No space left on device; the previous checkpoint.pt is intact" in stderr
    assert (out / "checkpoint.pt").read_bytes() == before and not list(out.rglob("*.tmp"))
    assert run(train.main, ["--resume", out, "--quiet"], capsys)[0] == 0  # once there is room again
    assert without_wall_time(json.loads((out / "result.json").read_text())) == without_wall_time(
        json.loads((full_run / "result.json").read_text()))


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["config"].update(max_iter=4.5), "saved config: max_iter must be int, got 4.5"),
    (lambda s: s["config"].update(ema=float("inf")), "are refused: --ema must be a finite number"),
    (lambda s: s.pop("rng"), "it has no 'rng' entry"),
    (lambda s: s["dis"].update({"l5.weight_orig": torch.zeros(1, 3)}), "size mismatch for l5.weight_orig"),
    (lambda s: s.update(arch=[1, 0, 1, 1]), "needs an architecture of length 14"),
    (lambda s: s.update(iter=None), "its 'iter' entry is a NoneType"),
    (lambda s: s.update(best={"fid": "low"}), "best metrics"),
], ids=["config-type", "config-inf", "no-rng", "d-shape", "arch", "iter-type", "best"])
def test_resume_refuses_a_checkpoint_whose_contents_do_not_fit(damage, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train.main, [*TINY, "--out", out, "--stop-after", "2"], capsys)[0] == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    damage(state)
    torch.save(state, out / "checkpoint.pt")
    before = snapshot(out)
    code, _, stderr = run(train.main, ["--resume", out, "--quiet"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert message in stderr and str(out / "checkpoint.pt") in stderr
    assert snapshot(out) == before


def test_linear_lr_decay_reaches_zero_at_max_iter(tmp_path, capsys):
    code, _, _ = run(train.main, [*TINY, "--out", tmp_path / "decay", "--lr-decay", "--g-lr", "1e-3"], capsys)
    assert code == 0
    # The lr of iteration i (0-based) is lr * (1 - i / max_iter); the log shows the last iteration's.
    logged = [e["g_lr"] for e in read_log(tmp_path / "decay") if e["event"] == "eval"]
    assert logged == pytest.approx([1e-3 * 3 / 4, 1e-3 * 1 / 4])


def test_arch_from_a_search_result_picks_the_ranked_arch(tmp_path, capsys):
    second = [0, 1, 2, 1, 0, 2, 2, 1, 1, 0, 1, 2, 1, 3]
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "result.json").write_text(json.dumps({"archs": [
        {"arch": list(train.PAPER_ARCH), "inception_score": 3.0}, {"arch": second, "inception_score": 2.0}]}))
    argv = [*TINY, "--max-iter", "1", "--val-freq", "1", "--out", tmp_path / "run", "--json"]
    code, stdout, _ = run(train.main, [*argv, "--arch-from", tmp_path / "search", "--rank", "2"], capsys)
    assert code == 0 and json.loads(stdout)["arch"] == second


# --------------------------------------------------------------------------------------------- evaluate

def test_evaluate_reproduces_the_scores_training_logged(full_run, capsys):
    code, stdout, _ = run(evaluate.main, ["--checkpoint", full_run / "checkpoint.pt", "--json"], capsys)
    assert code == 0
    scores = json.loads(stdout)
    assert set(scores) == set(METRICS)
    assert math.isfinite(scores["fid"]) and scores["fid"] > 0 and scores["inception_score"] >= 1.0
    result = json.loads((full_run / "result.json").read_text())
    assert scores == pytest.approx({k: result[k] for k in METRICS}, rel=1e-9)


def test_evaluate_scores_best_pt_in_human_form(full_run, capsys):
    code, stdout, _ = run(evaluate.main, ["--checkpoint", full_run / "best.pt", "--num-images", "60"], capsys)
    assert code == 0
    assert stdout.startswith("IS ") and " FID " in stdout and "ema generator" in stdout and "60 images" in stdout


def test_save_stats_round_trip(full_run, tmp_path, capsys):
    path = tmp_path / "digits16.npz"
    code, stdout, _ = run(evaluate.main, ["--save-stats", path, "--resolution", "16", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["num_features"] == 64
    mu, sigma = load_fid_stats(path)
    # The same statistics training cached for its FID (digits at the 16 px the generator draws).
    cached_mu, cached_sigma = load_fid_stats(cache_path("digits", None, 16, "digits-mlp-v1", None))
    np.testing.assert_allclose(mu, cached_mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sigma, cached_sigma, rtol=1e-10, atol=1e-12)
    # ... and the features' own statistics, straight from the images.
    direct_mu, _ = dataset_statistics(load_images("digits"), load_feature_net("digits"), 16, batch_size=1000)
    np.testing.assert_allclose(mu, direct_mu, rtol=1e-6, atol=1e-6)
    # Scoring against the file gives what scoring against the cache gives.
    checkpoint = full_run / "checkpoint.pt"
    _, with_file, _ = run(evaluate.main, ["--checkpoint", checkpoint, "--fid-stats", path, "--json"], capsys)
    _, with_cache, _ = run(evaluate.main, ["--checkpoint", checkpoint, "--json"], capsys)
    assert json.loads(with_file)["fid"] == pytest.approx(json.loads(with_cache)["fid"], rel=1e-9)


@pytest.fixture(scope="module")
def authors_file(tmp_path_factory):
    """AutoGAN's derived-training checkpoint of the paper's arch, as torch 1.x wrote it (toy sizes: 16 px)."""
    path = tmp_path_factory.mktemp("authors") / "autogan_cifar10_a.pth"
    save_as_torch1(full_checkpoint(randomize(AuthorsGenerator(train.PAPER_ARCH, 8, 8, 2), 1).eval()), path)
    return path


def test_evaluate_scores_an_autogan_file_given_its_arch_in_any_spelling(authors_file, capsys):
    argv = ["--checkpoint", authors_file, "--dataset", "digits", "--num-images", "100", "--batch-size", "50"]
    paper = [str(v) for v in train.PAPER_ARCH]
    results = []
    for arch in (["autogan_cifar10_a"], paper, [" ".join(paper)]):  # name, separate ints, one string
        code, stdout, _ = run(evaluate.main, [*argv, "--json", "--arch", *arch], capsys)
        assert code == 0
        results.append(json.loads(stdout))
    assert results[0] == results[1] == results[2]
    # The generator load_generator gives, scored as training scores (seed 12345, digits statistics at 16 px).
    net, cpu = load_feature_net("digits"), torch.device("cpu")
    reference = reference_statistics("digits", None, None, 16, net, lambda: load_images("digits", resolution=16),
                                     50, cpu)
    expected = score_generator(load_generator(authors_file, arch="autogan_cifar10_a"), net, reference, 100, 50, 10,
                               12345, cpu)
    assert results[0] == pytest.approx(expected, rel=1e-9)
    code, stdout, _ = run(evaluate.main, [*argv, "--arch", "autogan_cifar10_a"], capsys)
    assert code == 0 and "avg_gen_state_dict of AutoGAN checkpoint" in stdout and "epoch 320" in stdout


@pytest.mark.parametrize("words, arch", [
    ([str(v) for v in train.PAPER_ARCH], train.PAPER_ARCH),             # AutoGAN's own spelling: separate ints
    ([" ".join(map(str, train.PAPER_ARCH))], train.PAPER_ARCH),         # one quoted string
    ([",".join(map(str, train.PAPER_ARCH))], train.PAPER_ARCH),         # as AutoGAN prints it
    (["autogan_cifar10_b"], (1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 3)),  # a released generator's name
], ids=["separate", "string", "commas", "name"])
def test_train_arch_spellings(words, arch):
    assert train.chosen_arch(train.build_parser().parse_args(["--arch", *words])) == arch


# --------------------------------------------------------------------------------------------- bad input

class Foreign:
    """A class no weights file needs."""


@pytest.fixture
def bad_inputs(tmp_path, full_run, authors_file):
    """Files the bad-input cases point at; returns the placeholders their argv use."""
    torch.save({"avg_gen_state_dict": {}, "args": Foreign()}, tmp_path / "foreign.pt")
    torch.save({"epoch": 3}, tmp_path / "neither.pt")
    torch.save(randomize(AuthorsGenerator((1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3), 8, 8, 2), 1).state_dict(),
               tmp_path / "authors_c.pth")
    (tmp_path / "malformed.json").write_text("{not json")
    (tmp_path / "two.json").write_text(json.dumps({"archs": [{"arch": list(train.PAPER_ARCH)}] * 2}))
    (tmp_path / "short.json").write_text(json.dumps({"archs": [{"arch": [1, 0, 1, 1]}]}))
    (tmp_path / "huge.json").write_text('{"archs": [{"arch": [1e400, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3]}]}')
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    save_fid_stats(tmp_path / "dim3.npz", np.zeros(3), np.eye(3))
    torch.save({"format": "autogan_fast.search/1"}, tmp_path / "search.pt")
    (tmp_path / "search_run").mkdir()
    torch.save({"format": "autogan_fast.search/1"}, tmp_path / "search_run" / "checkpoint.pt")
    return {"tmp": tmp_path, "ckpt": full_run / "checkpoint.pt", "authors": authors_file}


BAD_INPUTS = [
    # (tool, argv, expected text on stderr, why this input must be refused)
    ("train", ["--dataset", "imagenet"], "unknown dataset", "a dataset we cannot load"),
    ("train", ["--engine", "fast"], "--engine must be one of", "an engine that does not exist"),
    ("train", ["--dataset", "cifar10"], "needs --data-path", "CIFAR-10 without its folder"),
    ("train", ["--arch", "1 0 1 1"], "14 integers", "a stage-0 arch cannot be trained as a full generator"),
    ("train", ["--arch", "1 0 1 1 1 0"], "length 4, 9 or 14", "no stage has 6 decisions"),
    ("train", ["--arch", "1 0 1 1 1 0 0 1 1 1 0 1 0 9"], "skip-ins", "a code outside its decision's range"),
    ("train", ["--arch", "1", "0", "1", "1"], "14 integers", "separate ints of a stage-0 arch"),
    ("train", ["--arch", "autogan_cifar10_z"], "unknown architecture 'autogan_cifar10_z'", "a name never released"),
    ("train", ["--arch-from", "{tmp}/missing/result.json"], "no such file", "--arch-from a file that is not there"),
    ("train", ["--arch-from", "{tmp}/malformed.json"], "not a search result.json", "--arch-from garbage"),
    ("train", ["--arch-from", "{tmp}/two.json", "--rank", "3"], "out of range", "rank past the last arch"),
    ("train", ["--arch-from", "{tmp}/two.json", "--rank", "0"], "out of range", "ranks are 1-based"),
    ("train", ["--arch-from", "{tmp}/short.json"], "length 14", "a search result of a stage-0 arch"),
    ("train", ["--rank", "2"], "--arch-from", "--rank alone picks from nothing"),
    ("train", ["--arch", "1 0 1 1", "--arch-from", "{tmp}/two.json"], "not both", "two sources of the arch"),
    ("train", ["--resume", "{tmp}/empty"], "no checkpoint", "--resume of a folder without a checkpoint"),
    ("train", ["--resume", "{tmp}/search_run"], "not a checkpoint of autogan_fast.train",
     "--resume of a search's run folder"),
    ("train", ["--out", "{tmp}/taken"], "already exists", "--out over an existing run folder"),
    ("train", ["--gen-bs", "0"], "--gen-bs must be positive", "a zero batch"),
    ("train", ["--max-iter", "-3"], "--max-iter must be positive", "a negative run length"),
    ("train", ["--val-freq", "0"], "--val-freq must be positive", "evaluating every 0 iterations"),
    ("train", ["--num-eval-imgs", "5"], "--num-eval-imgs", "fewer images than IS splits"),
    ("train", ["--ema", "1.0"], "--ema must be in [0, 1)", "an EMA that never moves"),
    ("train", ["--stop-after", "-1"], "--stop-after", "a negative stop iteration"),
    ("train", ["--arch-from", "{tmp}/huge.json"], "must be a sequence of integers", "1e400 parses as inf"),
    ("train", ["--g-lr", "inf"], "--g-lr must be a finite number", "inf passes 'must be positive'"),
    ("train", ["--d-lr", "nan"], "--d-lr must be a finite number", "NaN fails every comparison"),
    ("train", ["--beta1", "1"], "--beta1 must be in [0, 1)", "Adam refuses it"),
    ("train", ["--bottom-width", "1"], "--bottom-width must be at least 2", "instance norm of one pixel"),
    ("train", ["--seed", str(2**63)], "--seed must be in 0..", "a seed torch and NumPy do not all take"),
    ("train", ["--seed", "-1"], "--seed must be in 0..", "a negative seed"),
    ("train", ["--out", "{tmp}/afile/run"], "cannot create run folder", "--out under a regular file"),
    ("train", ["--out", "{tmp}/afile"], "is a file, not a folder", "--out naming a regular file"),
    ("train", ["--gen-bs", "many"], "invalid int value", "argparse errors are one line too"),
    ("evaluate", ["--checkpoint", "{ckpt}", "--fid-stats", "{tmp}/dim3.npz"], "dim3.npz has 3-d features",
     "statistics of another feature network"),
    ("evaluate", ["--checkpoint", "{ckpt}", "--num-images", "0"], "--num-images", "no images to score"),
    ("evaluate", ["--checkpoint", "{tmp}/missing.pt"], "no checkpoint at", "a checkpoint that is not there"),
    ("evaluate", ["--checkpoint", "{tmp}/search.pt"], "not a checkpoint of autogan_fast.train",
     "a search checkpoint holds no trained generator"),
    ("evaluate", ["--checkpoint", "{tmp}/authors_c.pth"], "does not say its architecture",
     "AutoGAN's bare state dict needs --arch"),
    ("evaluate", ["--checkpoint", "{tmp}/authors_c.pth", "--arch", "autogan_cifar10_a"],
     "unexpected key 'cell1.n1.weight'", "BN entries under an arch without norms (strict loading accepts them)"),
    ("evaluate", ["--checkpoint", "{authors}", "--arch", "autogan_cifar10_c"], "missing key 'cell1.n1.weight'",
     "an arch with BN in cell 1 needs its entries"),
    ("evaluate", ["--checkpoint", "{authors}", "--arch", "0 0 1 1 1 0 0 1 1 1 0 1 0 3"], "post-activation",
     "AutoGAN's derived generators are pre-activation only"),
    ("evaluate", ["--checkpoint", "{authors}", "--arch", "1 0 1 1 1 0 0 1 1 1 0 1 0 9"], "--arch: architecture",
     "a code outside its decision's range"),
    ("evaluate", ["--checkpoint", "{authors}", "--arch", "autogan_cifar10_a", "--inception-weights",
                  "{tmp}/missing.pth"], "Inception-v3 weights file not found",
     "AutoGAN's files are CIFAR-10 generators: Inception is their default feature network"),
    ("evaluate", ["--checkpoint", "{ckpt}", "--arch", "autogan_cifar10_b"], "not the 1 0 1 1 1 0 1",
     "a train checkpoint's own arch is not the one given"),
    ("evaluate", ["--checkpoint", "{tmp}/foreign.pt"], "refusing to load", "a pickle holding an arbitrary class"),
    ("evaluate", ["--checkpoint", "{tmp}/neither.pt"], "matches no generator layout", "a dict of no known layout"),
    ("evaluate", ["--save-stats", "{tmp}/s.npz", "--arch", "autogan_cifar10_a"], "--arch only applies with "
     "--checkpoint", "an arch with nothing to load"),
    ("evaluate", [], "exactly one", "nothing to do"),
    ("evaluate", ["--checkpoint", "{ckpt}", "--seed", "-1"], "--seed must be in 0..", "a negative seed"),
    ("evaluate", ["--save-stats", "{tmp}/s.npz", "--seed", str(2**64)], "--seed must be in 0..",
     "a seed torch refuses"),
    ("evaluate", ["--checkpoint", "{ckpt}", "--save-stats", "{tmp}/s.npz"], "exactly one", "two jobs at once"),
    ("evaluate", ["--save-stats", "{tmp}/nowhere/s.npz"], "does not exist", "stats into a missing folder"),
    ("evaluate", ["--save-stats", "{tmp}/s.npz", "--dataset", "imagenet"], "unknown dataset",
     "a dataset we cannot load"),
    ("evaluate", ["--save-stats", "{tmp}/s.npz", "--batch-size", "0"], "--batch-size must be positive",
     "a zero batch"),
]


@pytest.mark.parametrize("tool, argv, expected, reason", BAD_INPUTS,
                         ids=[f"{tool}:{reason}" for tool, _, _, reason in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tool, argv, expected, reason, bad_inputs, capsys,
                                                         monkeypatch):
    tmp_path = bad_inputs["tmp"]
    monkeypatch.chdir(tmp_path)  # a default run folder would appear here, under runs/
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    main = train.main if tool == "train" else evaluate.main
    extra = TINY if tool == "train" else []
    code, stdout, stderr = run(main, [*extra, *(a.format(**bad_inputs) for a in argv)], capsys)
    assert code == 2, reason
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), f"{reason}: {stderr!r}"
    assert expected in stderr, f"{reason}: {stderr!r}"
    assert stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, reason


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "autogan_fast.train", "--help"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0
    for flag in ("--max-iter", "--n-critic", "--ema", "--lr-decay", "--arch-from", "--rank", "--resume",
                 "--stop-after", "--preset"):
        assert flag in result.stdout


def test_train_tensorboard_curves(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, _ = run(train.main, [*TINY, "--out", tmp_path / "r", "--tensorboard"], capsys)
    assert code == 0
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    assert {"train/inception_score", "train/fid", "train/d_loss", "train/g_loss", "train/g_lr"} <= \
        set(events.Tags()["scalars"])
    logged = [json.loads(ln) for ln in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    fids = [e["fid"] for e in logged if e["event"] == "eval"]
    assert [s.value for s in events.Scalars("train/fid")] == pytest.approx(fids, rel=1e-6)  # fp32 in the file


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the graph engine is allowed")
def test_train_graph_engine_needs_cuda(tmp_path, capsys):
    code, _, err = run(train.main, [*TINY, "--engine", "graph", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "needs a CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
