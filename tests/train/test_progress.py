"""Progress in logs: plain, throttled lines when nobody watches a terminal; callbacks checked."""

import io
import re
import subprocess
import sys

import pytest

from iris_nb.train.progress import LineProgress, check_callbacks, is_interactive, progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_stream_gets_one_line_per_tenth_of_the_run():
    log = io.StringIO()
    bar = progress_bar(1000, "training", stream=log)
    assert isinstance(bar, LineProgress) and not is_interactive(log)
    for k in range(1000):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (k + 1):.3g}")
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert len(lines) == 10, lines
    assert lines[0].startswith("training: 100/1000 batch (10%)") and lines[-1].startswith("training: 1000/1000")
    assert lines[-1].endswith("loss=0.001")
    assert all(re.search(r"[\d.]+ (batch/s|s/batch)", line) for line in lines)


def test_close_writes_the_final_count_once_and_a_terminal_gets_tqdm():
    log = io.StringIO()
    with LineProgress(7, "observing", unit="sample", stream=log) as bar:
        bar.update(7)
    assert log.getvalue().splitlines() == [line for line in log.getvalue().splitlines() if "7/7 sample (100%)" in line]
    assert len(log.getvalue().splitlines()) == 1
    quiet = io.StringIO()
    LineProgress(5, "x", stream=quiet).close()  # nothing done: nothing written
    assert quiet.getvalue() == ""
    assert is_interactive(_Terminal())
    assert not isinstance(progress_bar(3, "training", stream=_Terminal()), LineProgress)


def test_time_throttle_without_total():
    log = io.StringIO()
    bar = LineProgress(None, "training", stream=log, interval=3600)
    for _ in range(500):
        bar.update(1)
    bar.close()
    assert log.getvalue().splitlines() == [log.getvalue().splitlines()[0]] and "500 batch" in log.getvalue()


def test_callbacks_are_checked():
    assert check_callbacks(None) == ()
    assert check_callbacks(print) == (print,)
    with pytest.raises(TypeError, match="callables"):
        check_callbacks([print, 3])


def test_training_in_a_pipe_prints_few_clean_lines(tmp_path):
    """train_reverter(progress=True) with stderr piped (as in a torchrun rank log or CI)."""
    script = """
import torch
from torch.utils.data import TensorDataset
from iris_nb.grids import SMALL
from iris_nb.model import Reverter
from iris_nb.train import TrainingConfig, train_reverter
grid = SMALL.replace(distance=SMALL.distance.with_steps(64), lon=SMALL.lon.with_steps(64),
                     velocity=SMALL.velocity.with_steps(64), lat=SMALL.lat.with_steps(8), name="TINY")
torch.manual_seed(0)
x = torch.rand(24, 1, 64, 64)
train_reverter(Reverter(grid, width=0.25), TensorDataset(x, x.transpose(2, 3)),
               config=TrainingConfig(epochs=2, batch_size=1, batches_per_update=1, validation_fraction=0.0,
                                     device="cpu"), progress=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line for line in done.stderr.splitlines() if line.startswith("training:")]
    assert "\r" not in done.stderr
    assert 5 <= len(progress) <= 11, done.stderr  # 48 batches: one line per 10%
    assert progress[-1].startswith("training: 48/48 batch (100%)")
