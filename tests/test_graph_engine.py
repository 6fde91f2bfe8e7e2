"""The graph engine's static-buffer steps against the eager engine, on the CPU (no capture).

Run uncaptured, the graph engine's loop must train exactly like the eager one: same random draws in
the same order, same weights, same losses, bit for bit, over a few hundred steps with the same
architectures. Capture itself needs CUDA (tests marked gpu).
"""

import pytest
import torch

from autogan_fast.config import preset_config
from autogan_fast.data import DeviceImageData, load_images
from autogan_fast.engine import LossWindow, SharedGAN, train_shared
from autogan_fast.errors import UsageError
from autogan_fast.graph_engine import RESET_CHECK_EVERY, resolve_engine, train_shared_graph
from autogan_fast.graphs import CaptureBackend, GraphCache

TINY = dict(gf_dim=4, df_dim=4, latent_dim=8, bottom_width=2, dis_bs=8, gen_bs=8)
CPU = torch.device("cpu")


class RecordingBackend(CaptureBackend):
    """Runs eagerly and records what the cache asked for, in order."""

    def __init__(self):
        self.calls = []

    def warmup(self, step):
        self.calls.append("warmup")
        step()

    def capture(self, step):
        self.calls.append("capture")
        return step


def random_archs(stage, n, seed):
    from autogan_fast.controller import Controller

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
    keys = list(cache.graphs)  # least recently used first
    # (a, D+G) at 0, (b, D) at 1, (a, D+G) at 2 hit, (a, D) at 3, (b, D+G) at 4, (b, D) at 5 hit
    assert keys == [(0, tuple(a), True, 8, 8), (0, tuple(a), False, 8, 8), (0, tuple(b), True, 8, 8),
                    (0, tuple(b), False, 8, 8)]
    assert cache.stats.warmups == cache.stats.captures == 4 and cache.stats.hits == 2
    assert backend.calls == ["warmup", "capture"] * 4  # always warm up, then capture


def test_engine_choice():
    assert resolve_engine("auto", CPU) == "eager"
    assert resolve_engine("eager", CPU) == "eager"
    with pytest.raises(UsageError, match="needs a CUDA device"):
        resolve_engine("graph", CPU)
    with pytest.raises(UsageError, match="--engine must be one of"):
        resolve_engine("fast", CPU)
    assert resolve_engine("auto", torch.device("cuda")) == "graph"


def test_cache_evicts_the_least_recently_used_graph():
    runs = []
    cache = GraphCache(RecordingBackend(), max_graphs=2)
    for key in ["a", "b", "a", "c", "b"]:  # "c" evicts "b" (a was used more recently); "b" comes back
        cache.run(key, lambda key=key: runs.append(key))
    assert list(cache.graphs) == ["c", "b"]
    assert (cache.stats.captures, cache.stats.hits, cache.stats.evictions) == (4, 1, 2)
    assert runs == ["a", "b", "a", "c", "b"]  # every occurrence ran exactly once: warm-up or replay


def test_failed_capture_falls_back_to_eager_with_one_warning():
    class FailingBackend(RecordingBackend):
        def capture(self, step):
            raise RuntimeError("operation not permitted when stream is capturing")

    runs = []
    cache = GraphCache(FailingBackend(), max_graphs=4)
    with pytest.warns(RuntimeWarning, match="capture failed") as warned:
        for key in ["a", "a", "b", "a"]:
            cache.run(key, lambda key=key: runs.append(key))
    assert len(warned) == 1 and runs == ["a", "a", "b", "a"]
    assert (cache.stats.fallbacks, cache.stats.eager_runs, cache.stats.captures) == (2, 2, 0)
    assert not cache.graphs
