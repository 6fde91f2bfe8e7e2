"""Optional TensorBoard curves (`--tensorboard`), as AutoGAN logs them; a no-op logger otherwise.

TensorBoard is the `tb` extra (`pip install "autogan-fast[tb]"`): imported only when asked for, and
a missing install is a one-line usage error before the run folder is touched. Curves go to
RUN/tensorboard/ (`tensorboard --logdir RUN`); log.jsonl stays the complete record.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

TENSORBOARD_DIR = "tensorboard"


class ScalarLogger:
    """Logs nothing: what a run uses without --tensorboard."""

    def scalars(self, prefix: str, values: dict[str, object], step: int) -> None:
        """Log every int / float of `values` as `prefix/name` at `step`."""

    def close(self) -> None:
        """Flush and close."""


class TensorBoardLogger(ScalarLogger):
    """Scalars into a TensorBoard event file under `run_dir`/tensorboard."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # checked by `check_tensorboard` first

        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR))

    def scalars(self, prefix: str, values: dict[str, object], step: int) -> None:
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        self.writer.close()


def check_tensorboard() -> None:
    """UsageError unless TensorBoard imports (call before creating the run folder)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise UsageError(f"--tensorboard needs TensorBoard ({err}): pip install \"autogan-fast[tb]\"") from None


def scalar_logger(enabled: bool, run_dir: Path) -> ScalarLogger:
    return TensorBoardLogger(run_dir) if enabled else ScalarLogger()
