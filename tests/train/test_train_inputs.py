"""``regionspot train`` on bad inputs and environments: a diverging loss, a damaged
``metrics.csv``, impossible config values and a data-parallel launch without torchrun each end
as one clear line (an ``error:`` with exit status 2, or a ``warning:`` and a finished run),
never a traceback. The console script is run once per case; variants run in-process."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from regionspot.cli.main import main
from regionspot.config import ConfigError, apply_overrides, load_config
from regionspot.processes import ENV_VARIABLES, DistributedContext
from regionspot.train import trainer
from regionspot.train.config import OptimConfig, TrainConfig

ADVICE = "lower the learning rate (optim.lr is {lr}, e.g. --set optim.lr={lower}) and check the data (boxes, " \
         "images, token caches)"


def diverge_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The training loss of the ``step``-th step (1-based) becomes NaN, as after a bad update."""
    real, calls = trainer.sigmoid_focal_loss, [0]

    def loss(*args: object, **kwargs: object) -> torch.Tensor:
        calls[0] += 1
        value = real(*args, **kwargs)  # type: ignore[arg-type]
        return value * float("nan") if calls[0] == step else value

    monkeypatch.setattr(trainer, "sigmoid_focal_loss", loss)


def logged(run: Path, name: str) -> dict[int, float]:
    """step -> value of the training metric ``name`` in ``run/metrics.csv``."""
    with (run / "metrics.csv").open() as handle:
        return {int(row["step"]): float(row["value"]) for row in csv.DictReader(handle)
                if row["split"] == "train" and row["name"] == name}


# ----------------------------------------------------------------------------- a diverging loss


@pytest.mark.slow  # the console script (~5 s); in-process: test_divergence_names_the_step_and_the_kept_state
def test_a_diverging_loss_is_one_error_line(tiny_train_config: Callable[[Path], Path], run_console,
                                            tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    done = run_console("train", str(config), "--no-progress", "--set", "optim.lr=1e30")
    states = tmp_path / "run" / "checkpoints"
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    found = re.fullmatch(r"error: the loss is (nan|inf) at step (\d+): training diverged; (the last saved training "
                         rf"state {re.escape(str(states))}/step-(\d+)\.pt is kept \(--resume continues from it\)|no "
                         r"training state had been saved yet); " + re.escape(ADVICE.format(lr="1e+30", lower="1e+29")),
                         done.stderr.strip())
    assert found, done.stderr
    step, kept = int(found.group(2)), int(found.group(4) or 0)
    assert kept == step - 1 and not (states / f"step-{step:06d}.pt").exists()


@pytest.mark.parametrize("step", [1, 3])
def test_divergence_names_the_step_and_the_kept_state(step: int, tiny_train_config, monkeypatch, capsys,
                                                      tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    diverge_at(monkeypatch, step)
    assert main(["train", str(config), "--no-progress"]) == 2
    states = tmp_path / "run" / "checkpoints"
    kept = f"the last saved training state {states / 'step-000002.pt'} is kept (--resume continues from it)" \
        if step == 3 else "no training state had been saved yet"
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: the loss is nan at step {step}: training diverged; {kept}; "
                                + ADVICE.format(lr="2.5e-05", lower="2.5e-06")], err
    assert max(logged(tmp_path / "run", "loss"), default=0) == step - 1  # the diverged step is not logged


def test_resuming_with_a_lower_learning_rate_uses_it(tiny_train_config, monkeypatch, capsys, tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    diverge_at(monkeypatch, 3)
    assert main(["train", str(config), "--no-progress"]) == 2
    monkeypatch.undo()
    capsys.readouterr()
    rates, real_step = [], torch.optim.AdamW.step

    def step(optimizer: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
        rates.append(optimizer.param_groups[0]["lr"])
        return real_step(optimizer, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    assert main(["train", str(config), "--no-progress", "--resume", "--set", "optim.lr=1e-3"]) == 0
    assert "note: optim.lr 0.001 replaces the saved run's 2.5e-05 from step 2 on" in capsys.readouterr().out
    assert rates == pytest.approx([1e-3 * 3 / 1000, 1e-3 * 4 / 1000])  # steps 3 and 4, warming up over 1000
    exported = json.loads((tmp_path / "run" / "final" / "config.json").read_text())["config"]
    assert exported["sam"]["decoder_layer_norm_eps"] == pytest.approx(1e-6)  # the tiny HF SAM's: recorded


# ----------------------------------------------------------------------------- a damaged metrics.csv


@pytest.mark.slow
def test_a_damaged_metrics_file_is_repaired_on_resume(tiny_train_config, run_console, capsys,
                                                      tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    assert main(["train", str(config), "--no-progress", "--set", "iterations=2"]) == 0
    capsys.readouterr()
    metrics = tmp_path / "run" / "metrics.csv"
    damaged = metrics.read_bytes().replace(b"step,split,name,value", b"\x00\x00\x00") + b"hello\n2,train,lo"
    metrics.write_bytes(damaged)
    done = run_console("train", str(config), "--no-progress", "--resume")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    expected = (f"warning: {metrics}: kept 8 rows and dropped 3 lines that are not metrics rows (first: line 1: "
                rf"'\x00\x00\x00'); the file as it was is saved as {metrics}.damaged")
    assert warnings == [expected], done.stderr
    assert (tmp_path / "run" / "metrics.csv.damaged").read_bytes() == damaged
    assert sorted(logged(tmp_path / "run", "loss")) == [1, 2, 3, 4]
    assert (tmp_path / "run" / "curves.png").is_file()


# ----------------------------------------------------------------------------- impossible config values

IMPOSSIBLE = {  # --set override -> error message
    "loss.gamma=-1": "loss.gamma must be at least 0, got -1.0",
    "loss.alpha=1.5": "loss.alpha must be at most 1, got 1.5",
    "optim.lr=0": "optim.lr must be above 0, got 0.0",
    "optim.lr=-1e-4": "optim.lr must be above 0, got -0.0001",
    "optim.lr=nan": "optim.lr must be above 0, got nan",
    "optim.weight_decay=-0.1": "optim.weight_decay must be at least 0, got -0.1",
    "optim.warmup_iterations=-1": "optim.warmup_iterations must be at least 0, got -1",
    "optim.decay_factor=0": "optim.decay_factor must be above 0, got 0.0",
    "optim.decay_at=100,-5": "optim.decay_at: steps must be at least 0, got [-5]",
    "datasets.0.ratio=-1": "datasets.0.ratio must be above 0, got -1.0",
    "datasets.0.max_vocabulary=0": "datasets.0.max_vocabulary must be at least 1, got 0",
    "augment.min_short=900": "augment.min_short 900 must not exceed augment.max_short 800",
    "augment.crop_min_fraction=1.5": "augment.crop_min_fraction must be at most 1, got 1.5",
    "batch_size=0": "batch_size must be at least 1, got 0",
    "iterations=0": "iterations must be at least 1, got 0",
    "checkpoint_every=-1": "checkpoint_every must be at least 1, got -1",
    "max_regions_per_image=0": "max_regions_per_image must be at least 1, got 0",
    "seed=-3": "seed must be at least 0, got -3",
    "num_workers=-1": "num_workers must be at least 0, got -1",
    "model.fusion.dropout=1": "model.fusion.dropout must be below 1.0, got 1.0",
    "model.sam.decoder_layer_norm_eps=0": "model.sam.decoder_layer_norm_eps must be above 0, got 0.0",
    "model.inputs=official": "model.inputs: training feeds the head this library's own inputs; set model.inputs=native "
                             "('official' reproduces the authors' evaluation of their released heads)",
}


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: impossible values must be refused before."""
    def build(*args: object) -> None:
        pytest.fail("a model was loaded for an impossible config")

    monkeypatch.setattr(trainer, "build_training_model", build)


@pytest.mark.slow  # the console script (~5 s); in-process: test_impossible_values_are_refused_before_any_model_loads
def test_an_impossible_loss_value_is_refused_by_the_console_script(tiny_train_config, run_console,
                                                                   assert_one_error_line, tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    done = run_console("train", str(config), "--no-progress", "--set", "loss.gamma=-1")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, IMPOSSIBLE["loss.gamma=-1"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", sorted(IMPOSSIBLE))
def test_impossible_values_are_refused_before_any_model_loads(override: str, tiny_train_config, no_model, capsys,
                                                              assert_one_error_line, tmp_path: Path) -> None:
    assert main(["train", str(tiny_train_config(tmp_path)), "--no-progress", "--set", override]) == 2
    assert_one_error_line(capsys.readouterr().err, IMPOSSIBLE[override])


def test_impossible_values_in_the_yaml_are_refused(tiny_train_config, no_model, capsys, assert_one_error_line,
                                                   tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    config.write_text(config.read_text() + "optim:\n  lr: 0\n")  # the tiny config has no optim section
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_error_line(capsys.readouterr().err, "optim.lr must be above 0, got 0.0")


def test_a_config_changed_after_loading_is_checked_again(tiny_train_config, no_model, tmp_path: Path) -> None:
    config = load_config(TrainConfig, tiny_train_config(tmp_path))
    assert apply_overrides(config, ["optim.warmup_iterations=100"]).optim.warmup_iterations == 100  # longer than
    config.loss.gamma = -1.0  # the run: allowed (the rate never reaches its peak), unlike a negative gamma
    with pytest.raises(ConfigError, match=r"^loss.gamma must be at least 0, got -1.0$"):
        trainer.Trainer(config, DistributedContext())
    with pytest.raises(ConfigError, match=r"^optim.lr must be above 0, got -1$"):
        TrainConfig(optim=OptimConfig(lr=-1))  # built in Python, not from text


# ----------------------------------------------------------------------------- a launch without torchrun


@pytest.mark.slow  # the console script (~5 s); in-process: tests/train/test_distributed.py launch errors
def test_world_size_without_torchrun_is_one_error_line(tiny_train_config, run_console, assert_one_error_line,
                                                        tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    environment: dict[str, str | None] = dict.fromkeys(ENV_VARIABLES)
    done = run_console("train", str(config), "--no-progress", env={**environment, "WORLD_SIZE": "2"})
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not: "
                                       "this is not a torchrun launch; start data-parallel training with 'torchrun "
                                       "--nproc_per_node=2 -m regionspot train CONFIG', which sets all of RANK, "
                                       "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, or unset WORLD_SIZE to "
                                       "train in one process")
    assert not (tmp_path / "run" / "checkpoints").exists()
