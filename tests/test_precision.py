"""`--precision {fp32,tf32,bf16}` of GAN training (engines/precision.py) and the in-place dynamic reset.

On the CPU: each precision trains the tiny shared GAN for a few eager steps and stays close to fp32;
channels-last changes fp32 results only by rounding; the settings are checked and kept on resume; the
in-place reset keeps every tensor (same objects, same addresses) and gives the values of a fresh GAN.
On a GPU (marked gpu): a CUDA graph captured before an in-place reset replays correctly after it.
"""

import dataclasses
import json

import pytest
import torch
from capture_helpers import RecordingBackend
from cli_helpers import run_cli_captured

from autogan_fast.config import TrainConfig, preset_config
from autogan_fast.data import DeviceImageData, load_images
from autogan_fast.engines.cuda_graphs import GraphCache
from autogan_fast.engines.eager import LossWindow, SharedGAN, discriminator_step, generator_step, train_shared
from autogan_fast.engines.graph import train_shared_graph
from autogan_fast.engines.precision import new_adam, to_layout
from autogan_fast.errors import UsageError
from autogan_fast.jobs.driver import apply_resume_overrides

TINY = dict(gf_dim=4, df_dim=4, latent_dim=8, bottom_width=2, dis_bs=8, gen_bs=8)
CPU = torch.device("cpu")
ARCH = [1, 1, 1, 1]  # stage 0: pre-activation, BatchNorm, nearest (the fused op's path at fp32), shortcut
STEPS = 8  # D steps per comparison (4 G steps at n_critic 2): a few updates, seconds on a CPU


@pytest.fixture(scope="module")
def digits():
    return DeviceImageData(load_images("digits")[:160], CPU)


def tiny_config(precision="fp32", **overrides):
    return preset_config("demo", **TINY, shared_epoch=1, n_critic=2, dynamic_reset_threshold=0.0,
                         dynamic_reset_window=STEPS, precision=precision, **overrides).validate()


def train_steps(config, data, seed=0):
    """A fresh GAN (seeded) trained STEPS eager D steps; returns it and its (G, D) loss windows."""
    torch.manual_seed(seed)
    gan = SharedGAN.create(config, CPU)
    windows = LossWindow(STEPS, CPU), LossWindow(STEPS, CPU)
    train_shared(gan, data, config, 0, [ARCH] * STEPS, *windows)
    return gan, windows


@pytest.mark.parametrize("precision, atol", [
    # CPU kernels ignore the TF32 switch: tf32 is fp32 there, bit for bit
    ("tf32", 0.0),
    # bf16 keeps 8 significant bits (rounding 2^-9 = 0.2% per value); each of the ~6 layers a logit passes
    # rounds its output once (products accumulate in fp32), so a loss of O(1) moves by ~1% per step (measured:
    # <= 0.02 over these 8 D / 4 G steps); 0.05 leaves headroom yet fails on any wiring error (O(1) losses)
    ("bf16", 0.05),
])
def test_each_precision_trains_close_to_fp32(digits, precision, atol):
    fp32_gan, fp32_windows = train_steps(tiny_config("fp32"), digits)
    gan, windows = train_steps(tiny_config(precision), digits)
    for ours, reference in zip(windows, fp32_windows, strict=True):
        assert ours.count == reference.count > 0
        difference = (ours.values - reference.values).abs().max().item()
        assert difference <= atol, (precision, difference)
    if precision == "bf16":  # it did run in bf16: an unchanged fp32 run would match exactly
        assert not torch.equal(windows[1].values, fp32_windows[1].values)
    # what stays fp32 at every precision: parameters, buffers (BN statistics, SN vectors), Adam's moments
    tensors = [*gan.gen.parameters(), *gan.dis.parameters(), *gan.gen.buffers(), *gan.dis.buffers()]
    tensors += [v for opt in (gan.gen_opt, gan.dis_opt) for s in opt.state.values() for v in s.values()]
    assert all(t.dtype in (torch.float32, torch.long) for t in tensors)
    # BN's running statistics and the SN power iteration track the fp32 run's (fp32 accumulation of bf16 inputs)
    for name in ("cells.0.pre1.norms.bn.running_mean", "cells.0.pre1.norms.bn.running_var"):
        ours, reference = gan.gen.get_buffer(name), fp32_gan.gen.get_buffer(name)
        torch.testing.assert_close(ours, reference, atol=atol / 5, rtol=0)
    torch.testing.assert_close(gan.dis.l5.weight_u, fp32_gan.dis.l5.weight_u, atol=atol / 5, rtol=0)


def test_bf16_runs_the_forward_in_bf16_channels_last(digits):
    """The autocast region and the layout are really there (a run that ignored them would be fp32 NCHW)."""
    torch.manual_seed(0)
    config = tiny_config("bf16")
    gan = SharedGAN.create(config, CPU)
    seen = {}
    gan.gen.to_rgb[2].register_forward_hook(lambda m, i, out: seen.setdefault("gen", out))
    gan.dis.blocks[0].c1.register_forward_hook(lambda m, i, out: seen.setdefault("dis", out))
    real = digits.batches(8, gan.gen.output_resolution(0)).next()
    discriminator_step(gan.gen, gan.dis, gan.dis_opt, real, 8, precision="bf16", arch=ARCH)
    for name in ("gen", "dis"):
        assert seen[name].dtype == torch.bfloat16, name
        assert seen[name].is_contiguous(memory_format=torch.channels_last), name
    assert gan.gen.to_rgb[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert gan.dis.blocks[0].c1.weight_orig.is_contiguous()  # the SN kernel's layout


def test_channels_last_changes_fp32_results_only_by_rounding(digits):
    """fp32 nets in channels-last (the bf16 layout) against NCHW. The first G and D steps start from the same
    weights: their gradients agree within fp32 rounding of another summation order (1e-5 of the largest
    gradient of all); the losses of 4 G + 4 D steps within 1e-5 (Adam moves a weight by ~lr per step whatever
    its gradient, so weights after updates are no test of layout; the losses are smooth in them). A layout
    error (e.g. channels transposed) moves all of these by O(1)."""
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        gan = SharedGAN.create(tiny_config("fp32"), CPU)
        gan.gen.to(memory_format=layout)
        batches = digits.batches(8, gan.gen.output_resolution(0))
        losses, grads = [], []
        for i in range(4):
            losses.append(generator_step(gan.gen, gan.dis, gan.gen_opt, 8, 8, arch=ARCH))
            if i == 0:  # G's weights as created: its gradients compare directly
                grads += [p.grad.clone() for p in gan.gen.parameters() if p.grad is not None]
            real = to_layout(batches.next(), "bf16" if layout == torch.channels_last else "fp32")
            losses.append(discriminator_step(gan.gen, gan.dis, gan.dis_opt, real, 8, arch=ARCH))
            if i == 0:  # D not yet updated (the G step does not step D)
                grads += [p.grad.clone() for p in gan.dis.parameters() if p.grad is not None]
        results.append((torch.stack(losses), grads))
    assert gan.gen.cells[0].pre1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    (nchw_losses, nchw_grads), (nhwc_losses, nhwc_grads) = results
    torch.testing.assert_close(nhwc_losses, nchw_losses, atol=1e-5, rtol=1e-5)
    assert len(nhwc_grads) == len(nchw_grads) > 20
    scale = max(g.abs().max().item() for g in nchw_grads)  # a bias before a BN has a gradient of ~0 alone
    for a, b in zip(nhwc_grads, nchw_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-4)


def test_adam_is_the_for_loop_one_on_the_cpu():
    """Fused Adam rounds differently on the CPU (1 ulp after a few steps): the CPU keeps today's Adam."""
    opt = new_adam([torch.nn.Parameter(torch.zeros(3))], 1e-3, (0.0, 0.9), CPU, capturable=False)
    assert not opt.param_groups[0]["fused"]


# ---------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_bad_precision_is_one_line_and_exit_2(command, tmp_path, capsys):
    from autogan_fast import search, train

    main = {"search": search.main, "train": train.main}[command]
    code, _, stderr = run_cli_captured(main, ["--precision", "fp16", "--out", tmp_path / "r"], capsys)
    assert code == 2 and stderr.count("\n") == 1
    assert "--precision must be one of fp32, tf32, bf16, got 'fp16'" in stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("config_cls", [TrainConfig, None])  # None: the search's config
def test_precision_cannot_change_on_resume(config_cls, tmp_path):
    """It changes the trajectory (another run, not a continuation), so it is not a resumable override."""
    from autogan_fast.jobs.search import SearchJob
    from autogan_fast.jobs.train import TrainJob

    if config_cls is None:
        config, resumable = preset_config("demo", precision="bf16").validate(), SearchJob.resumable
    else:
        config, resumable = preset_config("demo", TrainConfig, precision="bf16").validate(), TrainJob.resumable
    with pytest.raises(UsageError, match="--precision cannot change when resuming"):
        apply_resume_overrides(tmp_path, config, {"precision": "fp32"}, resumable)


SEARCH_TINY = ["--gf-dim", "4", "--df-dim", "4", "--latent-dim", "8", "--max-search-iter", "3", "--grow-step1", "1",
               "--grow-step2", "2", "--shared-epoch", "1", "--dis-bs", "300", "--gen-bs", "16", "--ctrl-step", "1",
               "--rl-num-eval-img", "40", "--eval-batch-size", "20", "--num-candidate", "2", "--topk", "1",
               "--num-grid-images", "4", "--seed", "3", "--quiet"]


def test_a_bf16_search_resumes_at_bf16_exactly(tmp_path, capsys):
    """Stopped after iteration 0 and resumed with the saved settings alone: bf16 again, and the result is
    the uninterrupted bf16 run's, score for score; asking for another precision is refused."""
    from autogan_fast.search import main

    code, stdout, _ = run_cli_captured(main, [*SEARCH_TINY, "--precision", "bf16", "--out", tmp_path / "full",
                                              "--json"], capsys)
    assert code == 0
    full = json.loads(stdout)
    out = tmp_path / "stopped"
    assert run_cli_captured(main, [*SEARCH_TINY, "--precision", "bf16", "--out", out, "--stop-after", "0"],
                            capsys)[0] == 0
    code, _, stderr = run_cli_captured(main, ["--resume", out, "--precision", "fp32"], capsys)
    assert code == 2 and stderr.count("\n") == 1 and "--precision cannot change" in stderr
    code, stdout, _ = run_cli_captured(main, ["--resume", out, "--quiet", "--json"], capsys)
    assert code == 0
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["precision"] == "bf16"
    resumed = json.loads(stdout)
    assert [(a["arch"], a["inception_score"]) for a in resumed["archs"]] == \
        [(a["arch"], a["inception_score"]) for a in full["archs"]]


def test_a_checkpoint_without_precision_loads_as_fp32():
    """Runs saved before --precision existed continue as they ran: fp32."""
    from autogan_fast.config import SearchConfig, config_from_dict

    saved = dataclasses.asdict(preset_config("demo"))
    del saved["precision"]
    assert config_from_dict(saved, SearchConfig).precision == "fp32"


# ---------------------------------------------------------------------------------------------
# The in-place dynamic reset


def every_tensor(gan):
    tensors = {f"gen.{k}": v for k, v in [*gan.gen.named_parameters(), *gan.gen.named_buffers()]}
    tensors.update({f"dis.{k}": v for k, v in [*gan.dis.named_parameters(), *gan.dis.named_buffers()]})
    for name, opt in (("gen_opt", gan.gen_opt), ("dis_opt", gan.dis_opt)):
        for i, per_param in enumerate(opt.state.values()):
            tensors.update({f"{name}.{i}.{k}": v for k, v in per_param.items()})
    return tensors


@pytest.mark.parametrize("precision", [
    "fp32",  # the default: the search's reset as it always was, now in place
    "bf16",  # channels-last generator weights: the reset keeps their layout
])
def test_the_in_place_reset_keeps_the_tensors_and_gives_a_fresh_gans_values(digits, precision):
    config = tiny_config(precision)
    gan, _ = train_steps(config, digits)
    before = every_tensor(gan)
    addresses = {name: (id(t), t.data_ptr(), t.stride()) for name, t in before.items()}
    assert any(k.endswith("exp_avg") for k in before)  # trained: Adam has state to reset
    torch.manual_seed(7)
    gan.reinitialize(config)
    after = every_tensor(gan)
    assert {name: (id(t), t.data_ptr(), t.stride()) for name, t in after.items()} == addresses
    torch.manual_seed(7)
    fresh = SharedGAN.create(config, CPU)  # what the reset used to build (the same draws)
    fresh_tensors = every_tensor(fresh)
    for name, tensor in after.items():
        if "_opt." in name:  # a fresh Adam has no state yet: its first step creates these zeros
            assert not tensor.any(), name
        else:
            assert torch.equal(tensor, fresh_tensors[name]), name
    # and training on from the reset is training a fresh GAN, bit for bit
    windows = [LossWindow(STEPS, CPU) for _ in range(4)]
    for net, pair in ((gan, windows[:2]), (fresh, windows[2:])):
        torch.manual_seed(11)
        train_shared(net, digits, config, 0, [ARCH] * 4, *pair)
    assert torch.equal(windows[0].values, windows[2].values) and torch.equal(windows[1].values, windows[3].values)
    for name, tensor in every_tensor(gan).items():
        assert torch.equal(tensor, every_tensor(fresh)[name]), name


def test_a_reset_that_keeps_g_restarts_d_alone_with_the_same_draws(digits):
    """`reinitialize(generator=False)` (the demo's reset at a healthy iteration, `reset_keeps_healthy_g`):
    G's weights and Adam state stay as trained; D and its Adam state become exactly what a full reset from
    the same random state gives them, and the random stream after it is the full reset's."""
    config = tiny_config("fp32")
    kept, _ = train_steps(config, digits)
    full, _ = train_steps(config, digits)
    trained = {name: tensor.clone() for name, tensor in every_tensor(kept).items()}
    after = {}
    for gan, generator in ((kept, False), (full, True)):
        torch.manual_seed(7)
        gan.reinitialize(config, generator=generator)
        after[generator] = torch.rand(3)  # the next draw
    fully_reset = every_tensor(full)
    for name, tensor in every_tensor(kept).items():
        reference = trained[name] if name.startswith("gen") else fully_reset[name]
        assert torch.equal(tensor, reference), name
    assert any(name.startswith("gen_opt") and tensor.any() for name, tensor in trained.items())  # G's Adam kept
    assert torch.equal(after[False], after[True])


def test_a_graph_captured_before_the_reset_replays_after_it(digits):
    """The graph engine's cache is kept across the reset: the second phase replays the first phase's
    graphs (no new capture) and trains exactly as the eager engine does after the same reset."""
    config = tiny_config("fp32")
    results = {}
    for engine in ("eager", "graph"):
        torch.manual_seed(0)
        gan = SharedGAN.create(config, CPU)
        windows = LossWindow(STEPS, CPU), LossWindow(STEPS, CPU)
        backend = RecordingBackend()
        cache = GraphCache(backend, 16)
        for phase in range(2):
            if engine == "eager":
                train_shared(gan, digits, config, 0, [ARCH] * 4, *windows)
            else:
                train_shared_graph(gan, digits, config, 0, [ARCH] * 4, *windows, cache=cache)
            if phase == 0:
                gan.reinitialize(config)
                events_at_reset = list(backend.events)
        results[engine] = (every_tensor(gan), [w.values.clone() for w in windows])
    assert events_at_reset == ["warmup", "capture", "warmup", "capture", "replay", "replay"]
    assert backend.events[len(events_at_reset):] == ["replay"] * 4  # the same graphs, after the reset
    eager, graph = results["eager"], results["graph"]
    for name in eager[0]:
        assert torch.equal(eager[0][name], graph[0][name]), name
    for a, b in zip(eager[1], graph[1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("precision, rtol", [
    # capturable fused Adam and replayed kernels differ from eager only in rounding (TF32 off)
    ("fp32", 1e-3),
    # one fp32 ulp of difference can flip a bf16 rounding (2^-9 relative) and 8 steps carry it on
    ("bf16", 2e-2),
])
def test_a_cuda_graph_captured_before_the_reset_replays_after_it_on_gpu(precision, rtol, monkeypatch):
    """Real capture: phase 1 captures the D and D + G graphs, the reset rewrites the tensors in place, phase 2
    only replays; its losses must match an eager GAN reset the same way (a graph reading stale or freed
    memory gives O(1) differences or NaNs)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from autogan_fast.engines.cuda_graphs import CudaGraphBackend

    cuda = torch.device("cuda")
    data = DeviceImageData(load_images("digits")[:160], cuda)
    config = dataclasses.replace(tiny_config(precision), dis_bs=16, gen_bs=16)
    windows = {}
    for engine in ("eager", "graph"):
        torch.manual_seed(0)
        gan = SharedGAN.create(config, cuda, capturable=engine == "graph")
        wins = LossWindow(STEPS, cuda), LossWindow(STEPS, cuda)
        cache = GraphCache(CudaGraphBackend(cuda), 16)
        for phase in range(2):
            torch.manual_seed(100 + phase)
            if engine == "eager":
                train_shared(gan, data, config, 0, [ARCH] * 4, *wins)
            else:
                train_shared_graph(gan, data, config, 0, [ARCH] * 4, *wins, cache=cache)
            if phase == 0:
                torch.manual_seed(5)
                gan.reinitialize(config)
        if engine == "graph":
            assert cache.stats.captures == 2 and cache.stats.hits == 6
        windows[engine] = [w.values.cpu() for w in wins]
    for eager, graph in zip(windows["eager"], windows["graph"], strict=True):
        assert torch.isfinite(graph).all()
        torch.testing.assert_close(graph, eager, rtol=rtol, atol=rtol / 10)


def test_the_precision_trajectory_benchmark_runs_tiny(tmp_path):
    """The GPU comparison's module, at CPU size: three runs of as many blocks, bf16 really differing from
    fp32 (same init and draws) and the summary computed from the trajectories."""
    from benchmarks.precision_trajectory import main

    out = tmp_path / "trajectory.json"
    assert main(["--tiny", "--stage", "0", "--steps", "10", "--block", "5", "--archs", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert set(runs) == {"fp32", "bf16", "fp32-reseeded"} and result["engine"] == "eager"
    assert all(len(r["d_loss"]) == len(r["g_loss"]) == 2 for r in runs.values())
    assert runs["bf16"]["precision"] == "bf16" and runs["bf16"]["d_loss"] != runs["fp32"]["d_loss"]
    summary = result["summary"]
    first = sum(abs(a - b) for a, b in zip(runs["bf16"]["d_loss"], runs["fp32"]["d_loss"], strict=True)) / 2
    assert summary["bf16_vs_fp32"]["d_loss_mean_abs_diff"] == pytest.approx(first)
    assert isinstance(summary["bf16_within_reseed_noise"], bool)
