"""Training-state checkpoints: RNG capture, atomic saves, crash recovery, exact continuation."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from regionspot.train.config import OptimConfig
from regionspot.train.schedule import build_optimizer, build_scheduler
from regionspot.train.state import (
    LATEST_NAME,
    capture_rng_state,
    latest_training_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
    state_filename,
)
from regionspot.weights import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[2]


def draw() -> tuple[list[float], list[float], list[float], list[float]]:
    return ([random.random() for _ in range(3)], np.random.rand(3).tolist(), torch.rand(3).tolist(),
            [random.gauss(0, 1) for _ in range(3)] + np.random.randn(3).tolist())


def test_rng_state_reproduces_numbers_through_a_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn(1)  # and in numpy's
    path = save_training_state(tmp_path / state_filename(0), {"rng": capture_rng_state()})
    expected = draw()
    draw()  # move every generator on
    restore_rng_state(load_training_state(path)["rng"])
    assert draw() == expected


def test_rng_state_without_a_generator_is_refused() -> None:
    state = capture_rng_state()
    del state["numpy"]
    with pytest.raises(CheckpointError, match="numpy"):
        restore_rng_state(state)


def make_run(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    config = OptimConfig(lr=1e-2, warmup_iterations=3, decay_at=[4], decay_factor=0.5)
    optimizer = build_optimizer(model, config)
    return model, optimizer, build_scheduler(optimizer, config)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        inputs = torch.randn(4, 3) + float(np.random.rand()) + random.random()  # every RNG matters
        loss = model(inputs).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


def test_resume_continues_exactly(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_run()
    random.seed(0)
    np.random.seed(0)
    train(model, optimizer, scheduler, 3)
    state = {"step": 3, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": capture_rng_state()}
    save_training_state(tmp_path / state_filename(3), state)
    uninterrupted = train(model, optimizer, scheduler, 3)

    fresh_model, fresh_optimizer, fresh_scheduler = make_run(seed=99)  # different init and RNG
    loaded = load_training_state(tmp_path)
    fresh_model.load_state_dict(loaded["model"])
    fresh_optimizer.load_state_dict(loaded["optimizer"])
    fresh_scheduler.load_state_dict(loaded["scheduler"])
    restore_rng_state(loaded["rng"])
    assert loaded["step"] == 3
    assert train(fresh_model, fresh_optimizer, fresh_scheduler, 3) == uninterrupted
    for ours, theirs in zip(fresh_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_latest_pointer_and_keep(tmp_path: Path) -> None:
    for step in (100, 200, 300):
        save_training_state(tmp_path / state_filename(step), {"step": step})
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == ["step-000200.pt", "step-000300.pt"]
    assert json.loads((tmp_path / LATEST_NAME).read_text())["file"] == "step-000300.pt"
    assert latest_training_state(tmp_path) == tmp_path / "step-000300.pt"
    assert load_training_state(tmp_path)["step"] == 300
    save_training_state(tmp_path / state_filename(400), {"step": 400}, keep=None)
    save_training_state(tmp_path / state_filename(500), {"step": 500}, keep=3)
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == ["step-000300.pt", "step-000400.pt",
                                                                   "step-000500.pt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_empty_folder_has_no_state(tmp_path: Path) -> None:
    assert latest_training_state(tmp_path) is None
    assert latest_training_state(tmp_path / "missing") is None
    with pytest.raises(CheckpointError, match="no training state"):
        load_training_state(tmp_path)


def test_crash_while_writing_leaves_previous_state(tmp_path: Path) -> None:
    save_training_state(tmp_path / state_filename(100), {"step": 100})
    # killed while writing step 200: a half-written temporary that was never renamed
    (tmp_path / ".step-000200.pt.abc123.tmp").write_bytes(b"PK\x03\x04 half a zip")
    assert latest_training_state(tmp_path) == tmp_path / "step-000100.pt"
    assert load_training_state(tmp_path)["step"] == 100
    save_training_state(tmp_path / state_filename(200), {"step": 200})
    assert not (tmp_path / ".step-000200.pt.abc123.tmp").exists()  # cleaned up by the next save
    assert load_training_state(tmp_path)["step"] == 200


def test_truncated_last_file_is_not_used_while_latest_points_to_previous(tmp_path: Path) -> None:
    save_training_state(tmp_path / state_filename(100), {"step": 100, "weights": torch.randn(1000)})
    save_training_state(tmp_path / state_filename(200), {"step": 200, "weights": torch.randn(1000)})
    # the pointer was never moved to step 200, and step 200's file is cut short
    (tmp_path / LATEST_NAME).write_text(json.dumps({"file": "step-000100.pt"}))
    data = (tmp_path / "step-000200.pt").read_bytes()
    (tmp_path / "step-000200.pt").write_bytes(data[: len(data) // 2])
    assert latest_training_state(tmp_path) == tmp_path / "step-000100.pt"
    assert load_training_state(tmp_path)["step"] == 100
    with pytest.raises(CheckpointError, match="could not be read"):
        load_training_state(tmp_path / "step-000200.pt")


def test_corrupt_latest_file_falls_back_to_older_with_a_warning(tmp_path: Path) -> None:
    save_training_state(tmp_path / state_filename(100), {"step": 100})
    save_training_state(tmp_path / state_filename(200), {"step": 200})
    (tmp_path / "step-000200.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="older training state"):
        assert load_training_state(tmp_path)["step"] == 100
    (tmp_path / "step-000100.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match="older training state"), pytest.raises(CheckpointError, match="could be read"):
        load_training_state(tmp_path)


def test_missing_or_broken_pointer_falls_back_to_highest_step(tmp_path: Path) -> None:
    for step in (100, 200):
        save_training_state(tmp_path / state_filename(step), {"step": step})
    (tmp_path / LATEST_NAME).write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_training_state(tmp_path)["step"] == 200
    (tmp_path / LATEST_NAME).unlink()
    assert latest_training_state(tmp_path) == tmp_path / "step-000200.pt"


def test_unloadable_values_are_refused_at_save_time(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state\['extra'\]\[1\].*ndarray"):
        save_training_state(tmp_path / state_filename(1), {"extra": [1, np.zeros(2)]})
    with pytest.raises(TypeError, match=r"state\['lr'\] is a numpy.float64"):
        save_training_state(tmp_path / state_filename(1), {"lr": np.float64(0.1)})  # subclasses float
    with pytest.raises(TypeError, match="key"):
        save_training_state(tmp_path / state_filename(1), {(1, 2): 3})
    assert list(tmp_path.iterdir()) == []
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a dict"):
        load_training_state(tmp_path / "list.pt")


WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from regionspot.train.state import save_training_state, state_filename
    folder = Path(sys.argv[1])
    torch.manual_seed(0)
    weights = torch.randn(200_000)
    for step in range(1, 100_000):
        save_training_state(folder / state_filename(step), {"step": step, "weights": weights + step})
        print(step, flush=True)
""")


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.031])
def test_sigkill_during_saves_leaves_a_loadable_state(tmp_path: Path, delay: float) -> None:
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                               cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"1"  # a first state is committed
        time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # latest.json must name a complete file: no fallback
        state = load_training_state(tmp_path)
    base = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    assert state["step"] >= 1
    assert torch.equal(state["weights"], base + state["step"])
    assert len(list(tmp_path.glob("step-*.pt"))) <= 3  # keep=2, plus at most one being pruned
