"""The graph engine's static-buffer steps against the eager engine, on the CPU (no capture).

Run uncaptured, the graph engine's loop must train exactly like the eager one: same random draws in
the same order, same weights, same losses, bit for bit, over a few hundred steps with the same
architectures. Capture itself needs CUDA (tests marked gpu).
"""

import contextlib
import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from capture_helpers import RecordingBackend

from autogan_fast.config import preset_config
from autogan_fast.data import DeviceImageData, load_images
from autogan_fast.engines.cuda_graphs import CaptureBackend, GraphCache, GraphCaptureError
from autogan_fast.engines.eager import LossWindow, SharedGAN, train_shared
from autogan_fast.engines.graph import RESET_CHECK_EVERY, resolve_engine, train_shared_graph
from autogan_fast.errors import UsageError
from autogan_fast.search_space import arch_key

TINY = dict(gf_dim=4, df_dim=4, latent_dim=8, bottom_width=2, dis_bs=8, gen_bs=8)
CPU = torch.device("cpu")


def random_archs(stage, n, seed):
    from autogan_fast.nas.controller import Controller

    torch.manual_seed(seed)
    with torch.no_grad():
        return Controller.for_stage(stage, "mlas", 8).sample(n).archs.tolist() if stage == 0 else None


def run_engine(engine, config, data, archs, seed=0, cache=None, stage=0):
    torch.manual_seed(seed)
    gan = SharedGAN.create(config, CPU)
    windows = LossWindow(config.dynamic_reset_window, CPU), LossWindow(config.dynamic_reset_window, CPU)
    if engine == "eager":
        summary = train_shared(gan, data, config, stage, archs, *windows)
    else:
        cache = cache or GraphCache(CaptureBackend(), 16)
        summary = train_shared_graph(gan, data, config, stage, archs, *windows, cache=cache)
    return gan, windows, summary


def tensors_of(gan):
    state = {f"gen.{k}": v for k, v in gan.gen.state_dict().items()}
    state.update({f"dis.{k}": v for k, v in gan.dis.state_dict().items()})
    for name, opt in (("gen_opt", gan.gen_opt), ("dis_opt", gan.dis_opt)):
        for i, per_param in opt.state_dict()["state"].items():
            state.update({f"{name}.{i}.{k}": v for k, v in per_param.items() if isinstance(v, torch.Tensor)})
    return state


@pytest.fixture(scope="module")
def digits():
    return DeviceImageData(load_images("digits")[:200], CPU)


def test_uncaptured_graph_engine_trains_bit_for_bit_like_the_eager_one(digits):
    """300 D steps (60 G steps) over 20 architectures cycling, epochs of 25 batches: identical."""
    config = preset_config("demo", **TINY, shared_epoch=12, n_critic=5, dynamic_reset_window=20,
                           dynamic_reset_threshold=0.0).validate()  # never resets: the whole run compares
    archs = (random_archs(0, 20, seed=1) * 15)[:300]
    eager_gan, eager_windows, eager_summary = run_engine("eager", config, digits, archs)
    graph_gan, graph_windows, graph_summary = run_engine("graph", config, digits, archs)
    assert eager_summary == graph_summary and eager_summary.steps == 300 and eager_summary.g_steps == 60
    eager, graph = tensors_of(eager_gan), tensors_of(graph_gan)
    assert eager.keys() == graph.keys() and len(eager) > 50
    for name in eager:
        assert torch.equal(eager[name], graph[name]), name
    for a, b in zip(eager_windows, graph_windows, strict=True):
        assert torch.equal(a.values, b.values) and a.count == b.count


@pytest.mark.parametrize("check_every", [1, 7, RESET_CHECK_EVERY])
def test_dynamic_reset_fires_within_check_every_steps_of_the_eager_one(digits, check_every):
    """With a threshold every window meets, the eager engine resets at the G step that fills both windows;
    the graph engine at the first host check at or after it (and never before)."""
    config = preset_config("demo", **TINY, shared_epoch=20, n_critic=3, dynamic_reset_window=6,
                           dynamic_reset_threshold=1e9).validate()
    archs = (random_archs(0, 4, seed=2) * 200)[:400]
    _, _, eager = run_engine("eager", config, digits, archs)
    torch.manual_seed(0)
    gan = SharedGAN.create(config, CPU)
    windows = LossWindow(6, CPU), LossWindow(6, CPU)
    graph = train_shared_graph(gan, digits, config, 0, archs, *windows, cache=GraphCache(CaptureBackend(), 4),
                               check_every=check_every)
    assert eager.dynamic_reset and graph.dynamic_reset
    assert eager.steps == 16  # G steps at D steps 0, 3, ..., 15: the 6th fills the G window
    assert eager.steps <= graph.steps < eager.steps + check_every and graph.steps % check_every == 0
    assert windows[0].count == windows[1].count == 0  # cleared, as the eager engine does


def test_graph_keys_are_stage_arch_kind_and_batch_shapes(digits):
    config = preset_config("demo", **TINY, shared_epoch=1, n_critic=2).validate()
    a, b = [0, 0, 1, 0], [1, 1, 1, 1]
    archs = [a, b, a, a, b, b]  # D steps 0..5; G steps at 0, 2, 4
    backend = RecordingBackend()
    cache = GraphCache(backend, 8)
    torch.manual_seed(0)
    gan = SharedGAN.create(config, CPU)
    windows = LossWindow(100, CPU), LossWindow(100, CPU)
    train_shared_graph(gan, digits, config, 0, archs, *windows, cache=cache)
    keys = list(cache.graphs)  # in order of capture
    # (a, D+G) at 0, (b, D) at 1, (a, D+G) at 2 hit, (a, D) at 3, (b, D+G) at 4, (b, D) at 5 hit
    assert keys == [(0, arch_key(a), True, 8, 8), (0, arch_key(b), False, 8, 8), (0, arch_key(a), False, 8, 8),
                    (0, arch_key(b), True, 8, 8)]
    assert cache.stats.warmups == cache.stats.captures == 4 and cache.stats.hits == 2
    # always warm up, then capture; the two hits (steps 2 and 5) replay
    assert backend.events == ["warmup", "capture"] * 2 + ["replay"] + ["warmup", "capture"] * 2 + ["replay"]


def test_engine_choice():
    assert resolve_engine("auto", CPU) == "eager"
    assert resolve_engine("eager", CPU) == "eager"
    with pytest.raises(UsageError, match="needs a CUDA device"):
        resolve_engine("graph", CPU)
    with pytest.raises(UsageError, match="--engine must be one of"):
        resolve_engine("fast", CPU)
    assert resolve_engine("auto", torch.device("cuda")) == "graph"


def test_a_full_cache_is_flushed_whole():
    """Graphs are never destroyed one by one (a destroyed graph frees its capture stream's cuBLAS
    workspace, still baked into the others): a new key in a full cache drops every graph first."""
    runs = []
    backend = RecordingBackend()
    cache = GraphCache(backend, max_graphs=2)
    for key in ["a", "b", "a", "c", "b"]:  # "c" flushes a and b; "b" comes back as a new key
        cache.run(key, lambda key=key: runs.append(key))
    assert list(cache.graphs) == ["c", "b"]
    assert (cache.stats.captures, cache.stats.hits, cache.stats.flushes) == (4, 1, 1)
    assert runs == ["a", "b", "a", "c", "b"]  # every occurrence ran exactly once: warm-up or replay
    cache.resize(3)
    cache.run("d", lambda: runs.append("d"))  # room now: nothing dropped
    assert list(cache.graphs) == ["c", "b", "d"] and cache.stats.flushes == 1


def test_a_failed_capture_stops_the_run_with_one_line():
    """No eager fallback: a failed capture leaves CUDA's generator in capture mode (engines/cuda_graphs.py)."""
    class FailingBackend(RecordingBackend):
        def capture(self, step):
            raise RuntimeError("operation not permitted when stream is capturing\nCUDA kernel errors ...")

    runs = []
    cache = GraphCache(FailingBackend(), max_graphs=4)
    with pytest.raises(GraphCaptureError) as caught:
        cache.run("a", lambda: runs.append("a"))
    message = str(caught.value)
    assert "'a'" in message and "not permitted when stream is capturing" in message and "\n" not in message
    assert "--engine eager" in message and isinstance(caught.value, UsageError)  # the CLI prints one line
    assert runs == ["a"] and not cache.graphs  # the warm-up ran the step; nothing was kept


class FakeCuda:
    """What `CudaGraphBackend` may call on `torch.cuda`, recorded; synchronize and empty_cache refuse."""

    def __init__(self, monkeypatch):
        self.calls = []
        calls = self.calls

        class Graph:
            def capture_begin(self, pool=None, capture_error_mode="global"):
                calls.append(("capture_begin", pool))

            def capture_end(self):
                calls.append(("capture_end",))

            def replay(self):
                calls.append(("replay",))

        class Stream:
            def __init__(self, device=None):
                pass

            def wait_stream(self, other):
                calls.append(("wait_stream",))

        @contextlib.contextmanager
        def stream(s):
            calls.append(("stream",))
            yield

        def refuse(name):
            def fail(*args, **kwargs):
                raise AssertionError(f"torch.cuda.{name} called during a capture")
            return fail

        pools = iter(range(100))
        for name, value in (("CUDAGraph", Graph), ("Stream", Stream), ("stream", stream),
                            ("graph_pool_handle", lambda: ("pool", next(pools))),
                            ("current_stream", lambda device=None: Stream()),
                            ("synchronize", refuse("synchronize")), ("empty_cache", refuse("empty_cache"))):
            monkeypatch.setattr(torch.cuda, name, value)


def test_capture_neither_synchronizes_nor_empties_the_allocator(monkeypatch):
    """`torch.cuda.graph` would run synchronize() and empty_cache() at every capture; the backend calls
    capture_begin(pool=...) / capture_end() on its own stream instead, one pool until a flush."""
    fake = FakeCuda(monkeypatch)
    from autogan_fast.engines.cuda_graphs import CudaGraphBackend

    cache = GraphCache(CudaGraphBackend(torch.device("cuda")), max_graphs=2)
    for key in ["a", "b", "a", "c"]:  # "c" flushes: a fresh pool for its capture
        cache.run(key, lambda: fake.calls.append(("step",)))
    captures = [c for c in fake.calls if c[0] == "capture_begin"]
    assert captures == [("capture_begin", ("pool", 0))] * 2 + [("capture_begin", ("pool", 1))]
    assert fake.calls.count(("capture_end",)) == 3 and fake.calls.count(("replay",)) == 1
    # each new key: warm-up (the step, on the side stream), then the capture (the step recorded)
    assert [c[0] for c in fake.calls[:7]] == ["wait_stream", "stream", "step", "wait_stream", "stream",
                                              "capture_begin", "step"]


def test_each_search_cache_has_its_own_backend_and_the_stages_key_space():
    from autogan_fast.nas.loop import AUTO_GRAPH_CACHE_CAP, graph_cache_sizes

    config = preset_config("paper")
    # D and D+G graphs per architecture; reward: a generator graph per architecture + the feature graph
    assert [graph_cache_sizes(config, s) for s in range(3)] == [(72, 37), (720, 361), (1440, 721)]
    slas = dataclasses.replace(config, search_mode="slas")
    assert graph_cache_sizes(slas, 2) == (AUTO_GRAPH_CACHE_CAP, AUTO_GRAPH_CACHE_CAP)
    assert graph_cache_sizes(dataclasses.replace(config, graph_cache_size=7), 1) == (7, 7)


def test_uncaptured_graph_engine_trains_a_derived_generator_like_the_eager_one(digits, tmp_path, monkeypatch):
    """train's loop with the graph engine's static steps (uncaptured, Adam as the eager engine's: on the
    CPU Adam cannot be capturable) equals the eager loop bit for bit, EMA and lr decay included."""
    import numpy as np

    from autogan_fast.config import TrainConfig
    from autogan_fast.metrics import load_feature_net
    from autogan_fast.training import loop as train

    monkeypatch.setattr(train, "make_capturable", lambda *a, **k: None)  # keep the eager Adam on the CPU
    config = TrainConfig(max_iter=12, val_freq=12, num_eval_imgs=20, eval_batch_size=10, gen_bs=8, dis_bs=8,
                         gf_dim=4, df_dim=4, latent_dim=8, bottom_width=2, n_critic=3, ema=0.9, lr_decay=True,
                         num_grid_images=4).validate()
    feature_net = load_feature_net("digits")
    reference = (np.zeros(feature_net.num_features), np.eye(feature_net.num_features))
    arch = (1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3)
    states = {}
    for engine in ("eager", "graph"):
        torch.manual_seed(0)
        state = train.TrainState.create(config, arch, CPU, engine)
        (tmp_path / engine).mkdir()
        train.train(state, digits, feature_net, reference, tmp_path / engine, CPU, quiet=True)
        states[engine] = state
    for part in ("gen", "dis", "ema"):
        eager, graph = getattr(states["eager"], part).state_dict(), getattr(states["graph"], part).state_dict()
        for name in eager:
            assert torch.equal(eager[name], graph[name]), f"{part}.{name}"
    assert states["eager"].last == states["graph"].last  # the same scores, losses included in the log
    logs = [(tmp_path / e / "log.jsonl").read_text().splitlines() for e in ("eager", "graph")]
    strip = [[{k: v for k, v in json.loads(ln).items() if k != "wall_seconds"} for ln in log] for log in logs]
    assert [e for e in strip[1] if e["event"] == "graph_cache"]  # the graph engine reports its cache
    assert strip[0] == [e for e in strip[1] if e["event"] != "graph_cache"]


# ---------------------------------------------------------------------------------------------
# GPU: real capture. Run by benchmarks/gpu_check.sh (pytest -m gpu).

GPU_TINY = dict(gf_dim=16, df_dim=16, latent_dim=16, bottom_width=2, dis_bs=16, gen_bs=16)


def _cuda_gan(config, capturable, seed=0):
    torch.manual_seed(seed)
    gan = SharedGAN.create(config, torch.device("cuda"), capturable=capturable)
    windows = (LossWindow(config.dynamic_reset_window, torch.device("cuda")),
               LossWindow(config.dynamic_reset_window, torch.device("cuda")))
    return gan, windows


@pytest.fixture(scope="module")
def cuda_digits():
    return DeviceImageData(load_images("digits")[:512], "cuda")


@pytest.mark.gpu
def test_graph_engine_matches_eager_on_gpu(cuda_digits, monkeypatch):
    """First steps: the same losses (TF32 off; capturable Adam and replayed kernels differ from eager only
    in rounding: relative 1e-4 after 10 steps of fp32 training, where any wiring error is O(1));
    afterwards the same training statistically (mean losses over the phase within 20%)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from autogan_fast.engines.cuda_graphs import CudaGraphBackend

    config = preset_config("demo", **GPU_TINY, shared_epoch=4, n_critic=5, dynamic_reset_threshold=0.0,
                           dynamic_reset_window=128).validate()  # no wrap: values[:10] are the first losses
    archs = (random_archs(0, 6, seed=3) * 100)[:4 * cuda_digits.steps_per_epoch(16)]
    summaries, windows = {}, {}
    for engine in ("eager", "graph"):
        gan, wins = _cuda_gan(config, capturable=engine == "graph")
        if engine == "eager":
            summaries[engine] = train_shared(gan, cuda_digits, config, 0, archs, *wins)
        else:
            cache = GraphCache(CudaGraphBackend(torch.device("cuda")), 64)
            summaries[engine] = train_shared_graph(gan, cuda_digits, config, 0, archs, *wins, cache=cache)
            assert cache.stats.captures == 12 and cache.stats.hits > 0  # 6 archs x (D, D+G)
        windows[engine] = wins
    first = [w[1].values[:10] for w in (windows["eager"], windows["graph"])]  # the first 10 D losses
    torch.testing.assert_close(first[1], first[0], rtol=1e-4, atol=1e-5)
    for key in ("d_loss", "g_loss"):
        eager, graph = getattr(summaries["eager"], key), getattr(summaries["graph"], key)
        assert abs(graph - eager) <= 0.2 * abs(eager) + 0.05, (key, eager, graph)


@pytest.mark.gpu
def test_graph_cache_memory_is_bounded_while_archs_cycle(cuda_digits):
    """200 distinct architectures through a 16-graph cache: every flush drops all graphs and their pool,
    so the peak after 200 stays within 2x of the peak after the first 40 (a leak of one graph's memory
    per architecture would grow it ~10x)."""
    import itertools
    import random

    from autogan_fast.engines.cuda_graphs import CudaGraphBackend

    config = preset_config("demo", **GPU_TINY, shared_epoch=1, n_critic=1, dynamic_reset_threshold=0.0).validate()
    cells = list(itertools.product(range(2), range(3), range(3), range(2)))  # one cell's 36 choices
    stage1 = [[*c1, *c2, skip] for c1, c2 in itertools.product(cells, cells) for skip in range(2)]
    random.Random(0).shuffle(stage1)
    archs = stage1[:200]  # 200 distinct stage-1 architectures
    gan, wins = _cuda_gan(config, capturable=True)
    cache = GraphCache(CudaGraphBackend(torch.device("cuda")), 16)
    peaks = []  # reserved memory: graph pools count there (max_memory_allocated would not show a leak)
    for start in range(0, 200, 20):
        train_shared_graph(gan, cuda_digits, config, 1, archs[start:start + 20], *wins, cache=cache)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        peaks.append(torch.cuda.memory_reserved())
    assert cache.stats.flushes > 0 and 0 < len(cache.graphs) <= 16
    assert peaks[-1] <= 2 * peaks[1], peaks


@pytest.mark.gpu
def test_no_host_sync_inside_a_captured_step(cuda_digits):
    from autogan_fast.engines.cuda_graphs import CudaGraphBackend
    from autogan_fast.engines.graph import GANStep

    config = preset_config("demo", **GPU_TINY, dynamic_reset_window=4).validate()
    gan, (g_window, d_window) = _cuda_gan(config, capturable=True)
    gan.set_stage(0)
    arch = [1, 1, 1, 1]
    images = cuda_digits.at_resolution(gan.gen.output_resolution(0))
    step = GANStep(gan.gen, gan.dis, gan.gen_opt, gan.dis_opt, images, 16, 16, config.latent_dim, d_window,
                   g_window, 1e-3)
    cache = GraphCache(CudaGraphBackend(torch.device("cuda")), 4)
    for i in range(3):  # warm-up + capture (builds plans, autotunes: host work allowed), then replays
        step.real_index.copy_(torch.randperm(len(images), device="cuda")[:16])
        torch.cuda.set_sync_debug_mode("error" if i else "default")
        try:
            cache.run("dg", lambda: step.d_g_step(arch))
            cache.run("d", lambda: step.d_step(arch))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert cache.stats.captures == 2 and cache.stats.hits == 4


@pytest.mark.parametrize("arch", [
    pytest.param([1, 1, 1, 1], id="pre-bn-nearest-fused-conv"),
    pytest.param([0, 2, 2, 1], id="post-in-deconv-shortcut"),
    pytest.param([1, 0, 0, 0, 1, 1, 2, 1, 1], id="stage1-bilinear-skip"),
])
def test_a_training_step_reads_nothing_back_to_the_host(digits, arch):
    """The captured functions (D step, D + G step with the reset rule) under NoHostSync, after one warm-up
    (which may build kernel plans, as the cache's warm-up does). Adam is fused here: the CPU's
    non-capturable Adam reads its step count with .item(); CUDA runs the capturable one."""
    from sync_guard import NoHostSync

    from autogan_fast.engines.graph import GANStep

    stage = (len(arch) - 4) // 5
    config = preset_config("demo", **TINY, dynamic_reset_window=4).validate()
    torch.manual_seed(0)
    gan = SharedGAN.create(config, CPU)
    gan.gen_opt = torch.optim.Adam(gan.gen.parameters(), config.g_lr, betas=(0.0, 0.9), fused=True)
    gan.dis_opt = torch.optim.Adam(gan.dis.parameters(), config.d_lr, betas=(0.0, 0.9), fused=True)
    gan.set_stage(stage)
    d_window, g_window = LossWindow(4, CPU), LossWindow(4, CPU)
    images = digits.at_resolution(gan.gen.output_resolution(stage))
    step = GANStep(gan.gen, gan.dis, gan.gen_opt, gan.dis_opt, images, 8, 8, config.latent_dim, d_window, g_window,
                   1e-3)
    step.real_index.copy_(torch.arange(8))
    step.d_g_step(arch)  # warm-up
    with NoHostSync():
        step.d_g_step(arch)
        step.d_step(arch)
    assert int(d_window.position) == 3 and int(g_window.position) == 2  # the device ring buffers advanced


def test_graphs_outlive_a_phase_and_keep_their_buffers(digits):
    """Two phases through one cache: the second phase's steps are replays of graphs recorded in the first,
    so they must write the buffers the second phase reads (one step object for the cache's life).
    Against two eager phases, bit for bit."""
    config = preset_config("demo", **TINY, shared_epoch=1, n_critic=2, dynamic_reset_threshold=0.0).validate()
    archs = random_archs(0, 3, seed=4) * 4  # 12 steps a phase, 3 architectures: hits in both phases
    summaries = {}
    for engine in ("eager", "graph"):
        torch.manual_seed(0)
        gan = SharedGAN.create(config, CPU)
        windows = LossWindow(500, CPU), LossWindow(500, CPU)
        cache = GraphCache(RecordingBackend(), 16)
        phases = []
        for _ in range(2):
            if engine == "eager":
                phases.append(train_shared(gan, digits, config, 0, archs, *windows))
            else:
                phases.append(train_shared_graph(gan, digits, config, 0, archs, *windows, cache=cache))
        summaries[engine] = phases
        if engine == "graph":
            assert cache.stats.captures == 6 and cache.stats.hits == 2 * 12 - 6
    assert summaries["graph"] == summaries["eager"] and summaries["graph"][1].d_loss != 0.0


def test_a_replay_invalidates_the_phase_weight_cache():
    from autogan_fast.kernels import upsample_conv as uc

    w = torch.randn(4, 3, 3, 3)
    uc._phase_weights(w, "ieee")
    assert uc._phase_cache
    cache = GraphCache(RecordingBackend(), 4)
    cache.run("k", lambda: None)  # warm-up + capture
    assert uc._phase_cache  # eager steps bump versions themselves: nothing to drop
    cache.run("k", lambda: None)  # a replay changes weights behind autograd's back
    assert not uc._phase_cache


def _run_python(code: str) -> subprocess.CompletedProcess:
    """A GPU check that may leave CUDA unusable runs in its own interpreter."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.gpu
def test_a_failed_gpu_capture_is_one_clear_error():
    """A step that reads the device inside its capture (.item(): not permitted while capturing) fails
    with GraphCaptureError naming the key and --engine eager; no fallback runs it again."""
    result = _run_python("""
        import torch
        from autogan_fast.engines.cuda_graphs import CudaGraphBackend, GraphCache, GraphCaptureError
        x = torch.zeros(4, device="cuda")
        def step():
            x.add_(torch.randn(4, device="cuda"))
            float(x.sum())  # a host read: fine eagerly, illegal while capturing
        cache = GraphCache(CudaGraphBackend(torch.device("cuda")), 4)
        try:
            cache.run("reads-the-host", step)
        except GraphCaptureError as err:
            print("ERROR:", err)
    """)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("ERROR: CUDA graph capture of step 'reads-the-host' failed") and "--engine eager" in line


@pytest.mark.gpu
def test_flushing_one_cache_leaves_another_caches_graphs_valid():
    """Two caches (as the search's training and reward caches), GEMMs captured in both; one is flushed
    many times (destroying its graphs frees its capture stream's cuBLAS workspace on torch >= 2.12).
    The other's graph still replays the eager result: the caches do not share a stream."""
    result = _run_python("""
        import torch
        from autogan_fast.engines.cuda_graphs import CudaGraphBackend, GraphCache
        torch.backends.cuda.matmul.allow_tf32 = False
        a, b = torch.randn(512, 512, device="cuda"), torch.randn(512, 512, device="cuda")
        out = torch.empty(512, 512, device="cuda")
        kept = GraphCache(CudaGraphBackend(torch.device("cuda")), 4)
        churned = GraphCache(CudaGraphBackend(torch.device("cuda")), 1)
        kept.run("gemm", lambda: torch.mm(a, b, out=out))
        scratch = torch.empty(256, 256, device="cuda")
        for i in range(20):  # every new key flushes the one-graph cache: its graphs are destroyed
            c = torch.randn(256, 256, device="cuda")
            churned.run(i, lambda c=c: torch.mm(c, c, out=scratch))
        out.zero_()
        kept.run("gemm", lambda: None)  # a replay of the first cache's graph
        torch.cuda.synchronize()
        print("MAXERR", float((out - a @ b).abs().max()), kept.stats.hits, churned.stats.flushes)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    _, err, hits, flushes = result.stdout.split()[-4:]
    assert float(err) < 1e-3 and int(hits) == 1 and int(flushes) == 19  # fp32 GEMM, same kernel: ~0
