"""torchrun: `evaluate`, `train` and `search` over 2 Gloo ranks on the CPU against one process, and the
pieces that make them agree (sharded scoring, replicated random streams, global-batch statistics).

The end-to-end tests start `python -m torch.distributed.run --standalone --nproc-per-node 2`, as a user
would; each takes a few seconds on the 2-core CI machine.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from cli_helpers import lock_held_elsewhere, run_cli_captured, run_to_success

from autogan_fast import evaluate, search, train
from autogan_fast.data import EpochBatches
from autogan_fast.distributed import World
from autogan_fast.engines.graph import resolve_engine
from autogan_fast.errors import UsageError
from autogan_fast.kernels import InceptionStats
from autogan_fast.metrics.fid import load_fid_stats
from autogan_fast.metrics.scoring import LATENT_BLOCK, image_latents
from autogan_fast.models.generator import BatchNorm2d

TINY_TRAIN = ["--gf-dim", "8", "--df-dim", "8", "--latent-dim", "8", "--gen-bs", "16", "--dis-bs", "16",
              "--n-critic", "2", "--val-freq", "2", "--num-eval-imgs", "100", "--eval-batch-size", "30",
              "--num-grid-images", "4", "--seed", "3", "--quiet"]
TINY_SEARCH = ["--max-search-iter", "3", "--grow-step1", "1", "--grow-step2", "2", "--shared-epoch", "1",
               "--ctrl-step", "2", "--num-candidate", "4", "--topk", "2", "--rl-num-eval-img", "60",
               "--eval-batch-size", "30", "--gf-dim", "8", "--df-dim", "8", "--latent-dim", "8", "--quiet"]
METRICS = ("inception_score", "inception_score_std", "fid")


def torchrun(module: str, args: list, cwd, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node nproc -m module args` (a script path instead of `-m` when
    `module` ends in .py); a hang fails the test through the timeout."""
    target = [module] if module.endswith(".py") else ["-m", module]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               *target, *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def checked(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-20000:]
    return result.stdout


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def run_files(run_dir) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------- the pieces


def test_world_rows_partition_the_batch():
    rows = [World(rank, 4).rows(12) for rank in range(4)]
    assert [list(range(12))[r] for r in rows] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert World().rows(12) == slice(0, 12)


def test_world_batch_starts_deal_batches_round_robin():
    """Scoring's sharding: batch k to rank k % size, the last one partial; together every batch once."""
    starts = [list(World(rank, 3).batch_starts(100, 30)) for rank in range(3)]
    assert starts == [[0, 90], [30], [60]]
    assert list(World().batch_starts(100, 30)) == [0, 30, 60, 90]


def test_world_size_must_divide_the_batches():
    World(0, 2).check_divides(gen_bs=16, dis_bs=8)
    with pytest.raises(UsageError, match=r"--dis-bs 9 is not divisible by the world size 2"):
        World(0, 2).check_divides(gen_bs=16, dis_bs=9)


def test_graph_engine_refuses_several_processes():
    cuda = torch.device("cuda")
    assert resolve_engine("auto", cuda, world_size=2) == "eager"  # auto picks what works
    with pytest.raises(UsageError, match="runs in one process"):
        resolve_engine("graph", cuda, world_size=2)


def test_epoch_batches_rank_rows_are_the_single_process_batch():
    """Replicated permutations: the ranks' rows, concatenated, are exactly one process's batches."""
    images = torch.arange(40, dtype=torch.uint8).view(10, 1, 2, 2).expand(10, 3, 2, 2).contiguous()
    seen = []
    for rank in range(2):
        torch.manual_seed(5)
        batches = EpochBatches(images, 4, World(rank, 2).rows(4))
        seen.append(torch.stack([batches.next_index() for _ in range(5)]))  # 5 > 2 batches per epoch
    torch.manual_seed(5)
    single = EpochBatches(images, 4)
    assert torch.equal(torch.cat(seen, dim=1), torch.stack([single.next_index() for _ in range(5)]))


@pytest.mark.parametrize("start, stop", [
    (0, 10),                                  # inside the first block
    (LATENT_BLOCK - 3, LATENT_BLOCK + 5),     # straddles a block border
    (5, 2 * LATENT_BLOCK + 1),                # spans three blocks
])
def test_image_latents_depend_on_seed_and_index_only(start, stop):
    whole = image_latents(7, 0, stop, 4, torch.device("cpu"))
    assert torch.equal(image_latents(7, start, stop, 4, torch.device("cpu")), whole[start:])
    assert not torch.equal(image_latents(8, start, stop, 4, torch.device("cpu")), whole[start:])


def test_inception_stats_shares_with_other_shifts_sum_to_the_whole():
    """Two shares fed with their global row offsets, each about its own first batch, re-centred on one
    shift and summed: the single accumulator's IS and FID statistics (float64 reference path)."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(60, 6, generator=gen, dtype=torch.float64) * 3 + 10
    logits = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    whole = InceptionStats(60, 6, 5, splits=4, device="cpu")
    for start in range(0, 60, 20):
        whole.update(features[start:start + 20], logits[start:start + 20])
    shares = [InceptionStats(60, 6, 5, splits=4, device="cpu") for _ in range(2)]
    for batch, start in enumerate(range(0, 60, 20)):  # batch k to share k % 2, as the scoring loop deals them
        shares[batch % 2].update(features[start:start + 20], logits[start:start + 20], start=start)
    shares[1].recenter_(shares[0].totals.shift)
    for mine, theirs in zip(shares[0].totals[1:], shares[1].totals[1:], strict=True):
        mine += theirs
    shares[0].num_seen += shares[1].num_seen
    assert shares[0].inception_score() == pytest.approx(whole.inception_score(), rel=1e-12)
    for merged, single in zip(shares[0].fid_stats(), whole.fid_stats(), strict=True):
        assert merged == pytest.approx(single, rel=1e-10, abs=1e-12)  # float64 rounding of the re-centring


def test_inception_stats_start_outside_the_images_is_an_error():
    stats = InceptionStats(10, 4, 3, splits=2, device="cpu")
    with pytest.raises(ValueError, match="start=8"):
        stats.update(torch.zeros(4, 4), torch.zeros(4, 3), start=8)


def test_batch_norm_without_ranks_is_torch_batch_norm():
    """Single process: our BatchNorm2d is nn.BatchNorm2d, bit for bit (the search stays bit-identical)."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    ours, torchs = BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    assert torch.equal(ours(x), torchs(x))
    assert torch.equal(ours.running_var, torchs.running_var)


# --------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def single_train(tmp_path_factory):
    """Four G iterations in one process (scored at 2 and 4): the reference of the torchrun runs."""
    out = tmp_path_factory.mktemp("single") / "run"
    run_to_success(train.main, [*TINY_TRAIN, "--max-iter", "4", "--out", out])
    return out


def test_evaluate_over_two_ranks_equals_one_process(single_train, tmp_path):
    """The ranks generate batches 0, 2, ... and 1, 3, ... of the same images (100 images, batches of 30:
    four batches, the last one partial) and sum float64 totals: equal to float64 rounding. The single
    process runs under torchrun too (one process: no process group), so both use one CPU thread and
    the fp32 networks give the same features bit for bit."""
    argv = ["--checkpoint", single_train / "checkpoint.pt", "--json", "--batch-size", "30"]
    one = last_json(checked(torchrun("autogan_fast.evaluate", argv, tmp_path, nproc=1)))
    two = last_json(checked(torchrun("autogan_fast.evaluate", argv, tmp_path)))
    for key in METRICS:
        assert two[key] == pytest.approx(one[key], rel=1e-12), key


def test_save_stats_over_two_ranks_equals_one_process(tmp_path, capsys):
    """Reference statistics of real data, the dataset's batches dealt to the ranks: rank 0 writes the
    file, equal to one process's to float64 rounding (the digits net's features are the same bits)."""
    argv = ["--save-stats", tmp_path / "one.npz", "--batch-size", "500"]
    code, _, err = run_cli_captured(evaluate.main, argv, capsys)
    assert code == 0, err
    checked(torchrun("autogan_fast.evaluate", ["--save-stats", tmp_path / "two.npz", "--batch-size", "500"],
                     tmp_path))
    one, two = load_fid_stats(tmp_path / "one.npz"), load_fid_stats(tmp_path / "two.npz")
    for single, ranks in zip(one, two, strict=True):
        assert ranks == pytest.approx(single, rel=1e-10, abs=1e-12)


def test_train_over_two_ranks_matches_one_process_and_resumes(single_train, tmp_path, capsys):
    """Same global batches and noise (replicated streams), global-batch BN statistics, DDP-averaged
    gradients: what differs is the order of fp32 sums (gradients, BN moments).

    Stated tolerance: logged losses within 1e-5 relative, parameters within 1e-4 of their tensor's
    largest value, except the conv biases that feed a batch norm (the last cell's output conv, before
    to_rgb's BN) and that BN's running mean: such a bias's gradient is 0 in exact arithmetic (BN removes
    any per-channel constant), so its computed gradient is rounding noise, which Adam normalizes into
    steps of full learning-rate size and arbitrary sign. The rank run then resumes in one process.
    """
    out = tmp_path / "ranks"
    checked(torchrun("autogan_fast.train", [*TINY_TRAIN, "--max-iter", "4", "--stop-after", "2", "--out", out],
                     tmp_path))
    checked(torchrun("autogan_fast.train", ["--resume", out, "--quiet"], tmp_path))  # same world size
    assert run_files(out) == run_files(single_train)
    single = torch.load(single_train / "checkpoint.pt", weights_only=True)
    ranks = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ranks["iter"] == single["iter"] == 4
    assert torch.equal(ranks["rng"]["cpu"], single["rng"]["cpu"])  # rank 0's stream is the single process's
    rounding_only = {"cells.2.pre2.conv.bias", "to_rgb.0.running_mean"}
    for net in ("gen", "dis", "ema"):
        for name, value in single[net].items():
            if value.is_floating_point() and name not in rounding_only:
                scale = value.abs().max().clamp_min(1e-12)
                assert (ranks[net][name] - value).abs().max() <= 1e-4 * scale, (net, name)
    logs = [[e for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if e["event"] == "eval"]
            for run in (single_train, out)]
    for one, two in zip(*logs, strict=True):
        assert two["d_loss"] == pytest.approx(one["d_loss"], rel=1e-5)
        assert two["g_loss"] == pytest.approx(one["g_loss"], rel=1e-5)

    # A different world size resumes too: one process continues the 2-rank run to iteration 6.
    code, _, err = run_cli_captured(train.main, ["--resume", out, "--max-iter", "6", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((out / "result.json").read_text())["iter"] == 6


def test_search_over_two_ranks_writes_what_one_process_writes(tmp_path, capsys):
    """A tiny search (both grows, dynamic-reset windows, the final top-k) over 2 ranks with parallel
    rewards (--ctrl-sample-batch defaults to 2 there) runs to the end with the single process's files."""
    code, _, err = run_cli_captured(search.main, [*TINY_SEARCH, "--out", tmp_path / "one"], capsys)
    assert code == 0, err
    checked(torchrun("autogan_fast.search", [*TINY_SEARCH, "--out", tmp_path / "two"], tmp_path))
    assert run_files(tmp_path / "two") == run_files(tmp_path / "one")
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["ctrl_sample_batch"] == 2
    steps = [e for e in map(json.loads, (tmp_path / "two" / "log.jsonl").read_text().splitlines())
             if e["event"] == "controller_step"]
    assert len(steps) == 3 * 2 * 2  # iterations x controller steps x one reward per rank, logged once
    result = json.loads((tmp_path / "two" / "result.json").read_text())
    assert 1 <= len(result["archs"]) <= 2


def test_world_size_not_dividing_the_batch_stops_every_rank(tmp_path):
    result = torchrun("autogan_fast.train", [*TINY_TRAIN, "--gen-bs", "15", "--out", tmp_path / "run"], tmp_path)
    assert result.returncode != 0
    assert "--gen-bs 15 is not divisible by the world size 2" in result.stderr
    assert not (tmp_path / "run").exists()  # before any work


def test_bad_out_on_rank_0_stops_every_rank(tmp_path):
    """The run folder is rank 0's to create: its refusal reaches rank 1 too (no rank waits forever)."""
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("a user's file")
    result = torchrun("autogan_fast.train", [*TINY_TRAIN, "--out", tmp_path / "taken"], tmp_path)
    assert result.returncode != 0
    for rank in (0, 1):
        assert f"(rank {rank}): error: --out {tmp_path / 'taken'} already exists" in result.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "a user's file"


def test_a_run_folder_in_use_stops_every_rank(single_train, tmp_path):
    """Rank 0 alone locks the run folder (the resume in the test above shows rank 1 does not try): its
    refusal, naming the holder, reaches rank 1 too."""
    out = tmp_path / "run"
    shutil.copytree(single_train, out)
    with lock_held_elsewhere(out) as running:
        result = torchrun("autogan_fast.train", ["--resume", out, "--max-iter", "6"], tmp_path)
    assert result.returncode != 0
    refusal = f"error: run folder {out} is in use by another run (pid {running.pid} on "
    for rank in (0, 1):
        assert f"(rank {rank}): {refusal}" in result.stderr


def test_a_failing_rank_brings_the_job_down_with_its_message(tmp_path):
    """Rank 1 crashes while rank 0 waits in a collective: torchrun stops the job and reports rank 1's
    error (through `run_cli`'s record), instead of hanging until the process group's timeout."""
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent("""
        import torch
        from autogan_fast.cli import run_cli
        from autogan_fast.jobs.inputs import torchrun_world

        def main(argv):
            with torchrun_world("cpu") as world:
                if world.rank == 1:
                    raise RuntimeError("rank 1 lost its data")
                world.barrier()
            return 0

        run_cli(main)
    """))
    result = torchrun(str(script), [], tmp_path, timeout=120)
    assert result.returncode != 0
    assert "rank 1 lost its data" in result.stderr
