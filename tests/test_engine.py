import math

import pytest
import torch

from autogan_fast.config import preset_config
from autogan_fast.data import DeviceImageData, EpochBatches, load_images, quantize_images, resize_uint8
from autogan_fast.engines.eager import LossWindow, SharedGAN, dynamic_reset_due, hinge_d_loss, train_shared

TINY = dict(gf_dim=4, df_dim=4, latent_dim=8, bottom_width=2, dis_bs=16, gen_bs=16)


def window_with(values, size):
    window = LossWindow(size, torch.device("cpu"))
    for v in values:
        window.push(torch.tensor(float(v)))
    return window


@pytest.mark.parametrize("g_values, d_values, due", [
    ([1, 2] * 5, [1, 2] * 5, False),        # both vary: keep training
    ([1.0] * 10, [1, 2] * 5, True),         # G loss flat: reset
    ([1, 2] * 5, [0.5] * 10, True),         # D loss flat: reset
    ([1.0] * 9, [1.0] * 10, False),         # G window not full yet
    # population variance (AutoGAN's RunningStats): 0.0315^2 = 9.9e-4 < 1e-3 resets; the unbiased
    # variance (x 10/9 = 1.1e-3) would not
    ([0.0, 0.063] * 5, [1, 2] * 5, True),
    # a non-finite loss makes the variance NaN, which no comparison finds low: it counts as due, so a
    # diverged phase ends (and its loss means stop the run)
    ([1, 2] * 4 + [math.nan, 1], [1, 2] * 5, True),
    ([1, 2] * 5, [math.inf] + [1, 2] * 4 + [1], True),
])
def test_dynamic_reset_rule(g_values, d_values, due):
    assert dynamic_reset_due(window_with(g_values, 10), window_with(d_values, 10), 1e-3) == due


def test_loss_window_is_a_ring_over_the_last_values():
    window = window_with(range(13), 5)
    assert sorted(window.values.tolist()) == [8, 9, 10, 11, 12]
    window.clear()
    assert not window.full


def test_hinge_loss():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    assert hinge_d_loss(real, fake).item() == pytest.approx((0 + 1) / 2 + (0 + 1.5) / 2)


def test_quantize_matches_autogan():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.5])
    assert quantize_images(x).tolist() == [0, 0, 127, 254, 255, 255]


def test_resize_keeps_uint8_range_and_identity():
    images = load_images("digits")[:4]
    assert resize_uint8(images, 8) is images
    big = resize_uint8(images, 16)
    assert big.dtype == torch.uint8 and big.shape == (4, 3, 16, 16)
    assert (big.float().mean() - images.float().mean()).abs() < 2  # brightness preserved


def test_dynamic_reset_ends_training_early_and_clears_windows():
    torch.manual_seed(0)
    config = preset_config("demo", **TINY, shared_epoch=5, n_critic=1, dynamic_reset_window=4,
                           dynamic_reset_threshold=1e9).validate()  # any variance is "low": reset when full
    data = DeviceImageData(load_images("digits")[:160], "cpu")
    gan = SharedGAN.create(config, torch.device("cpu"))
    g_window, d_window = LossWindow(4, torch.device("cpu")), LossWindow(4, torch.device("cpu"))
    archs = [[0, 1, 1, 0]] * (5 * data.steps_per_epoch(config.dis_bs))
    summary = train_shared(gan, data, config, 0, archs, g_window, d_window)
    assert summary.dynamic_reset and summary.steps == 4 and summary.g_steps == 4
    assert g_window.count == d_window.count == 0


def test_shared_training_runs_its_epochs_and_changes_both_nets():
    torch.manual_seed(0)
    config = preset_config("demo", **TINY, shared_epoch=2, n_critic=2).validate()
    data = DeviceImageData(load_images("digits")[:64], "cpu")
    gan = SharedGAN.create(config, torch.device("cpu"))
    before = [p.detach().clone() for p in (gan.gen.l1.weight, gan.dis.l5.weight_orig)]
    archs = [[0, 0, 0, 0], [1, 1, 1, 1], [1, 2, 2, 1], [0, 1, 0, 1]] * 2  # 2 epochs of 4 batches
    summary = train_shared(gan, data, config, 0, archs,
                           LossWindow(100, torch.device("cpu")), LossWindow(100, torch.device("cpu")))
    assert (summary.steps, summary.g_steps, summary.dynamic_reset) == (8, 4, False)
    assert not torch.equal(before[0], gan.gen.l1.weight) and not torch.equal(before[1], gan.dis.l5.weight_orig)


def test_g_steps_come_on_d_steps_0_n_2n():
    """AutoGAN's `step % n_critic == 0`: 11 D steps with n_critic 5 give G steps at 0, 5 and 10."""
    torch.manual_seed(0)
    config = preset_config("demo", **TINY, shared_epoch=1, n_critic=5).validate()
    data = DeviceImageData(load_images("digits")[:11 * 16], "cpu")  # 11 batches of 16: one epoch
    gan = SharedGAN.create(config, torch.device("cpu"))
    summary = train_shared(gan, data, config, 0, [[0, 1, 1, 0]] * 11,
                           LossWindow(100, torch.device("cpu")), LossWindow(100, torch.device("cpu")))
    assert (summary.steps, summary.g_steps) == (11, 3)


def test_epoch_batches_draw_every_image_once_per_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 1, 1).contiguous()
    torch.manual_seed(0)
    batches = EpochBatches(images, 3)  # 3 batches an epoch; the 10th image waits for a later epoch
    seen = []
    for _ in range(3):
        batch = batches.next()
        assert batch.shape == (3, 3, 1, 1)  # one static shape: the last partial batch is dropped
        seen += ((batch[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()
    assert len(set(seen)) == 9  # without replacement within the epoch
    state = batches.state_dict()
    resumed = EpochBatches(images, 3)
    resumed.load_state_dict(state)
    torch.manual_seed(5)
    expected = batches.next()
    torch.manual_seed(5)
    assert torch.equal(resumed.next(), expected)  # a checkpointed position continues exactly


def test_epoch_batches_with_fewer_images_than_a_batch():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert EpochBatches(images, 5).next().shape == (5, 3, 4, 4)
