import pytest
import torch

from autogan_fast.nas.controller import Beams, Controller, ReinforceBaseline, reinforce_loss
from autogan_fast.search_space import ARCH_LENGTHS, validate_arch


@pytest.mark.parametrize("stage, mode, length", [
    (0, "mlas", 4),    # MLAS stage 0 decides cell 1 alone
    (1, "mlas", 5),    # ... later stages decide only the new cell (prefix comes from a beam)
    (2, "mlas", 5),
    (2, "slas", 14),   # SLAS decides all three cells in one sequence
])
def test_decisions_per_controller(stage, mode, length):
    assert len(Controller.for_stage(stage, mode, 16).decoders) == length


def test_samples_are_valid_archs_with_beam_prefixes():
    torch.manual_seed(0)
    beams = Beams(torch.tensor([[1, 0, 1, 1], [0, 2, 2, 0]]), torch.randn(2, 16), torch.randn(2, 16))
    samples = Controller.for_stage(1, "mlas", 16).sample(50, beams)
    assert samples.archs.shape == (50, ARCH_LENGTHS[1])
    prefixes = {tuple(a[:4]) for a in samples.archs.tolist()}
    assert prefixes == {(1, 0, 1, 1), (0, 2, 2, 0)}  # both beams drawn in 50 samples
    for arch in samples.archs.tolist():
        validate_arch(arch, stage=1)
    assert samples.log_prob.shape == samples.entropy.shape == (50,)
    assert (samples.log_prob <= 0).all() and (samples.entropy > 0).all()


def test_beam_hidden_state_conditions_the_decisions():
    """The same controller gives other decision probabilities from another beam's hidden state."""
    torch.manual_seed(0)
    controller = Controller.for_stage(1, "mlas", 16)
    arch = torch.tensor([[0, 0, 0, 0]])
    beam_a = Beams(arch, torch.zeros(1, 16), torch.zeros(1, 16))
    beam_b = Beams(arch, torch.full((1, 16), 3.0), torch.full((1, 16), 3.0))
    assert not torch.allclose(controller.sample(1, beam_a, greedy=True).entropy,
                              controller.sample(1, beam_b, greedy=True).entropy)


def test_baseline_is_autogans_moving_average_per_batch_position():
    baseline = ReinforceBaseline(0.9)
    first = torch.tensor([2.0, 3.0], dtype=torch.float64)
    assert torch.equal(baseline.update(first), first)  # the first rewards seed it
    second = torch.tensor([4.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(baseline.update(second), 0.9 * first + 0.1 * second)


def test_first_step_of_a_phase_has_zero_advantage():
    """AutoGAN's train_controller starts its baseline at None: the first update's advantage is 0, so
    its loss (and gradient) is zero whatever the rewards."""
    torch.manual_seed(1)
    controller = Controller.for_stage(0, "mlas", 16)
    samples = controller.sample(3)
    loss, _ = reinforce_loss(samples, torch.tensor([5.0, 1.0, 9.0], dtype=torch.float64), ReinforceBaseline(0.9),
                             entropy_coeff=1e-3)
    assert loss.item() == 0.0


def test_reinforce_learns_a_rewarded_decision():
    """Reward conv=pre (1) only: the controller's probability of it must rise well above 1/2."""
    torch.manual_seed(0)
    controller = Controller.for_stage(0, "mlas", 32)
    optimizer = torch.optim.Adam(controller.parameters(), 1e-2, betas=(0.0, 0.9))
    baseline = ReinforceBaseline(0.9)
    for _ in range(150):
        samples = controller.sample(8)
        rewards = (samples.archs[:, 0] == 1).double()
        loss, total = reinforce_loss(samples, rewards, baseline, entropy_coeff=1e-3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert total.shape == (8,)
    share = (controller.sample(400).archs[:, 0] == 1).float().mean()
    assert share > 0.9


def test_the_random_arm_samples_uniformly_and_has_nothing_to_learn():
    """--search-mode random: MLAS's controller shape, every decision uniform (zero logits)."""
    from autogan_fast.nas.controller import UniformController

    torch.manual_seed(0)
    controller = Controller.for_stage(1, "random", 8)
    assert isinstance(controller, UniformController) and controller.cells == (1,)
    beams = Beams(torch.tensor([[0, 1, 2, 1], [1, 0, 0, 0]]), torch.zeros(2, 8), torch.zeros(2, 8))
    samples = controller.sample(6000, beams)
    new = samples.archs[:, 4:]  # cell 1's 5 decisions after the 4-integer beam prefix
    for k, size in enumerate((2, 3, 3, 2, 2)):
        counts = torch.bincount(new[:, k], minlength=size).double()
        # uniform: each count ~ Binomial(6000, 1/size); 5 standard deviations is < 4% of the mean
        expected = 6000 / size
        assert ((counts - expected).abs() < 5 * (expected * (1 - 1 / size)) ** 0.5).all(), (k, counts)
    assert not samples.log_prob.requires_grad  # no parameter shapes the distribution
