"""A fit stopped by SIGTERM or Ctrl+C exits 143 / 130 with one line on how to go on, not 0 or a crash's 1."""

import logging
import os
import signal

import lightning as L
import pytest
from slim_support import UsersModule, tiny_datamodule

from yolo_slim.cli.errors import EXIT_SIGINT, EXIT_SIGTERM, stopped_by_signal


class _Signal(L.Callback):
    """Sends the signal to this process at the second batch of epoch 1 (as `kill` would)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), self.number)


def _stopped_fit(number, tmp_path, synthetic_cache, caplog) -> SystemExit:
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        default_root_dir=tmp_path, callbacks=[_Signal(number)])
    with caplog.at_level(logging.ERROR, logger="yolo_slim.cli.errors"), pytest.raises(SystemExit) as stopped:
        with stopped_by_signal(trainer, lambda: "go on with resume=RUN"):
            trainer.fit(UsersModule(), datamodule=tiny_datamodule(synthetic_cache))
    return stopped.value


def test_sigterm_exits_143_and_says_how_to_go_on(tmp_path, synthetic_cache, caplog):
    stopped = _stopped_fit(signal.SIGTERM, tmp_path, synthetic_cache, caplog)
    assert stopped.code == EXIT_SIGTERM == 143  # Lightning's own SIGTERMException exits 0
    assert "stopped by SIGTERM in epoch 1, before the run ended: go on with resume=RUN" in caplog.text


def test_ctrl_c_exits_130_not_a_crashs_1(tmp_path, synthetic_cache, caplog):
    previous = signal.getsignal(signal.SIGINT)
    try:
        stopped = _stopped_fit(signal.SIGINT, tmp_path, synthetic_cache, caplog)
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores further Ctrl+C during its shutdown
    assert stopped.code == EXIT_SIGINT == 130
    assert "stopped by Ctrl+C (SIGINT) in epoch 1" in caplog.text


def test_any_other_exit_passes_through():
    class Finished:
        interrupted = False
        is_global_zero = True
        current_epoch = 0

    with pytest.raises(SystemExit) as stopped, stopped_by_signal(Finished(), lambda: "unused"):
        raise SystemExit(5)
    assert stopped.value.code == 5


def test_a_stopped_fine_tune_is_told_how_to_go_on_from_what_it_saved(tmp_path):
    from yolo_slim.cli.prune import _continue_hint

    (tmp_path / "checkpoints").mkdir()
    # Stopped in its first epoch: only the pruned network is saved.
    assert f"the pruned network is saved ({tmp_path / 'checkpoints' / 'pruned.ckpt'})" in _continue_hint(tmp_path)
    (tmp_path / "checkpoints" / "finetuned.ckpt").write_bytes(b"checkpoint")
    assert f"`python -m yolo_slim prune resume={tmp_path}`, or the same command with resume=auto" in \
        _continue_hint(tmp_path)
