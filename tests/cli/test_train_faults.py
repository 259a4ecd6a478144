"""``regionspot train`` on a full disk or with a read-only output: one ``error:`` line naming
the file and why, exit status 2, no traceback, the last training state kept, and ``--resume``
afterwards ending with exactly the weights of an undisturbed run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from regionspot.cli.main import main
from regionspot.model import checkpoint
from regionspot.train import state


@pytest.fixture(scope="module")
def reference_weights(tiny_train_config: Callable[[Path], Path],
                      tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The exported head of an undisturbed run."""
    folder = tmp_path_factory.mktemp("reference")
    assert main(["train", str(tiny_train_config(folder)), "--no-progress"]) == 0
    return load_file(str(folder / "run" / "final" / "model.safetensors"))


def assert_resumes_to(config: Path, weights: dict[str, torch.Tensor]) -> None:
    assert main(["train", str(config), "--no-progress", "--resume"]) == 0
    resumed = load_file(str(config.parent / "run" / "final" / "model.safetensors"))
    assert resumed.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(resumed[key], value), f"{key} differs after resume"


def test_a_full_disk_while_saving_the_state(tiny_train_config, reference_weights, full_disk, assert_one_error_line,
                                            tmp_path: Path, monkeypatch, capsys) -> None:
    config = tiny_train_config(tmp_path)
    states = tmp_path / "run" / "checkpoints"
    full_disk(state, "atomic_write", "step-000003.pt")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {states / 'step-000003.pt'}: No space left on device; free some disk "
                          f"space; the last saved training state {states / 'step-000002.pt'} is kept: continue "
                          "with --resume")
    assert sorted(path.name for path in states.iterdir()) == ["latest.json", "step-000001.pt", "step-000002.pt"]
    monkeypatch.undo()
    assert_resumes_to(config, reference_weights)


def test_a_full_disk_while_exporting_the_head(tiny_train_config, reference_weights, full_disk,
                                              assert_one_error_line, tmp_path: Path, monkeypatch, capsys) -> None:
    config = tiny_train_config(tmp_path)
    final, states = tmp_path / "run" / "final", tmp_path / "run" / "checkpoints"
    full_disk(checkpoint, "atomic_write_bytes", "model.safetensors")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {final / 'model.safetensors'}: No space left on device; free some disk "
                          f"space; the checkpoint {final} was not written; the last saved training state "
                          f"{states / 'step-000004.pt'} is kept: continue with --resume")
    assert list(final.iterdir()) == []
    monkeypatch.undo()
    assert_resumes_to(config, reference_weights)


@pytest.mark.slow
def test_a_read_only_output_dir_is_refused_before_any_work(tiny_train_config, run_read_only, assert_one_error_line,
                                                          tmp_path: Path) -> None:
    config = tiny_train_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    done = run_read_only(run, "train", str(config), "--no-progress")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"output_dir {run}: this user may not write in {run}")
    assert list(run.iterdir()) == []


@pytest.mark.slow  # a subprocess (~5 s); the kept state on a write error: the full-disk tests here
def test_a_read_only_checkpoint_folder_keeps_the_last_state(tiny_train_config, run_read_only, assert_one_error_line,
                                                            tmp_path: Path, capsys) -> None:
    config = tiny_train_config(tmp_path)
    states = tmp_path / "run" / "checkpoints"
    assert main(["train", str(config), "--no-progress", "--set", "iterations=2"]) == 0
    capsys.readouterr()
    before = {path.name: path.read_bytes() for path in states.iterdir()}
    done = run_read_only(states, "train", str(config), "--no-progress", "--resume")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr,
                          f"cannot write {states / 'step-000003.pt'}: Permission denied; make {states} writable or "
                          f"choose another folder; the last saved training state {states / 'step-000002.pt'} is "
                          "kept: continue with --resume")
    assert {path.name: path.read_bytes() for path in states.iterdir()} == before
