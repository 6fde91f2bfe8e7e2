"""AutoGAN's RNN controller and its REINFORCE update.

An LSTMCell (hidden 100) emits one decision of the new cell per step, each through its own softmax
decoder; the previous decision is embedded and fed back (the first step gets zeros). In multi-level
search each stage gets a fresh controller that only decides the newest cell, starting from the hidden
state of one of the previous stage's top-k architectures (a beam, chosen at random per sample).
In single-level search one controller decides all three cells in one sequence. The random arm of
a study (`--search-mode random`) runs MLAS's schedule with `UniformController`: every decision
uniform, never trained, so it measures what the search gains over chance at the same budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..search_space import NUM_CELLS, decision_sizes


@dataclass
class Beams:
    """The previous stage's top-k architectures and the controller hidden states that produced them."""

    archs: torch.Tensor  # (k, prefix_len) int64
    hx: torch.Tensor  # (k, hid) LSTM hidden state after the last decision of each architecture
    cx: torch.Tensor  # (k, hid) LSTM cell state


@dataclass
class Samples:
    """A batch of sampled architectures with what REINFORCE needs."""

    archs: torch.Tensor  # (B, L) int64, full vectors (beam prefix + new decisions)
    log_prob: torch.Tensor  # (B,) sum of log-probabilities of the new decisions (differentiable)
    entropy: torch.Tensor  # (B,) sum of the decoders' entropies (differentiable)
    hx: torch.Tensor  # (B, hid) final hidden state (a beam for the next stage)
    cx: torch.Tensor  # (B, hid)
    finite: torch.Tensor  # () bool on the device: every decision's logits were finite (else the archs are void)


class Controller(nn.Module):
    """Samples the decisions of `cells` (0-based cell numbers) in order."""

    def __init__(self, cells: tuple[int, ...], hid_size: int = 100):
        super().__init__()
        self.cells = tuple(cells)
        self.hid_size = hid_size
        self.tokens = [size for cell in self.cells for size in decision_sizes(cell)]
        self.lstm = nn.LSTMCell(hid_size, hid_size)
        self.encoder = nn.Embedding(sum(self.tokens), hid_size)
        self.decoders = nn.ModuleList(nn.Linear(hid_size, n) for n in self.tokens)
        self.offsets = [sum(self.tokens[:i]) for i in range(len(self.tokens))]

    @classmethod
    def for_stage(cls, stage: int, search_mode: str, hid_size: int) -> Controller:
        """MLAS: a controller for cell `stage` alone; SLAS: one for all cells; random: MLAS's, uniform."""
        cells = tuple(range(NUM_CELLS)) if search_mode == "slas" else (stage,)
        return (UniformController if search_mode == "random" else cls)(cells, hid_size)

    def decision_logits(self, step: int, hidden: torch.Tensor) -> torch.Tensor:
        """The logits of decision `step` given the LSTM's hidden state."""
        return self.decoders[step](hidden)

    def sample(self, batch_size: int, beams: Beams | None = None, greedy: bool = False) -> Samples:
        device = self.encoder.weight.device
        x = torch.zeros(batch_size, self.hid_size, device=device)
        if beams is None:
            hidden = (x, x)
            prefix = torch.zeros(batch_size, 0, dtype=torch.long, device=device)
        else:
            pick = torch.randint(len(beams.archs), (batch_size,), device=beams.archs.device)
            hidden = (beams.hx[pick].to(device), beams.cx[pick].to(device))
            prefix = beams.archs[pick].to(device)
        actions, log_probs, entropies = [], [], []
        finite = torch.ones((), dtype=torch.bool, device=device)
        for step in range(len(self.decoders)):
            hidden = self.lstm(x, hidden)
            logits = self.decision_logits(step, hidden[0])
            # A diverged controller (a huge --ctrl-lr) has logits that are not finite, and multinomial refuses
            # such probabilities (on CUDA with a device-side assert that ends the process). Rows like that
            # sample from zeros (uniformly) instead and `finite` reports them, read with the archs; finite
            # rows are untouched, so sampling is bit for bit what it was.
            row_finite = torch.isfinite(logits).all(-1, keepdim=True)
            finite = finite & row_finite.all()
            log_p = F.log_softmax(torch.where(row_finite, logits, 0.0), dim=-1)
            entropies.append(-(log_p.exp() * log_p).sum(-1))
            action = logits.argmax(-1) if greedy else torch.multinomial(log_p.exp(), 1).squeeze(1)
            actions.append(action)
            log_probs.append(log_p.gather(1, action[:, None]).squeeze(1))
            x = self.encoder(action + self.offsets[step])
        archs = torch.cat([prefix, torch.stack(actions, 1)], 1)
        return Samples(archs, torch.stack(log_probs, 1).sum(1), torch.stack(entropies, 1).sum(1),
                       hidden[0].detach(), hidden[1].detach(), finite)


class UniformController(Controller):
    """Every decision uniform over its choices (the logits are zeros); never trained. The controller's
    interface, so the search loop, its beams and its checkpoints serve the random arm unchanged."""

    def decision_logits(self, step: int, hidden: torch.Tensor) -> torch.Tensor:
        return torch.zeros(hidden.shape[0], self.tokens[step], device=hidden.device)


class ReinforceBaseline:
    """AutoGAN's REINFORCE baseline: an exponential moving average of the rewards, per position in the
    sampled batch, started afresh by every controller-training phase. Its first update seeds it with the
    rewards themselves (so the first step's advantage is zero); later ones are
    baseline = decay * baseline + (1 - decay) * rewards."""

    def __init__(self, decay: float):
        self.decay = decay
        self.value: torch.Tensor | None = None  # (B,) on the host

    def update(self, rewards: torch.Tensor) -> torch.Tensor:
        self.value = rewards.clone() if self.value is None else self.decay * self.value + (1 - self.decay) * rewards
        return self.value


def reinforce_loss(samples: Samples, rewards: torch.Tensor, baseline: ReinforceBaseline,
                   entropy_coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy-gradient loss, AutoGAN's way: reward += entropy bonus; advantage against the updated baseline.

    Returns (loss, total rewards). `rewards` are the per-sample Inception Scores (float64, on the host).
    """
    total = rewards + entropy_coeff * samples.entropy.detach().cpu().to(rewards.dtype)
    advantage = (total - baseline.update(total)).to(samples.log_prob.dtype).to(samples.log_prob.device)
    return -(samples.log_prob * advantage).sum(), total
