"""``regionspot train`` on a full disk or with a read-only output: one ``error:`` line naming
the file and why, exit status 2, no traceback, the last training state kept, and ``--resume``
afterwards ending with exactly the weights of an undisturbed run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_extract_faults import (
    assert_one_error_line,
    full_disk,
    run_read_only,
    unprivileged_prefix,
    write_coco_subset,
)

from regionspot.cli.main import main
from regionspot.model import checkpoint
from regionspot.train import state

BANK = "coco_clip-vit-b32_a-name.npy"


@pytest.fixture(scope="module")
def write_config(coco_sample: Path, shared_data: Path, tiny_sam_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """``write_config(folder)``: a 4-step training config on 3 photos (tiny SAM, no CLIP vision,
    the real text bank) saving its state every step into ``folder/run``; returns its path."""
    annotations = write_coco_subset(coco_sample, tmp_path_factory.mktemp("annotations") / "subset.json")

    def write(folder: Path) -> Path:
        config = {
            "model": {"sam": {"name_or_path": str(tiny_sam_dir)}, "clip": {"enabled": False},
                      "text": {"bank": str(shared_data / "text-banks" / BANK)},
                      "fusion": {"width": 64, "heads": 2, "ffn_dim": 64, "depth": 1}},
            "datasets": [{"name": "subset", "annotations": str(annotations), "images": str(coco_sample / "images")}],
            "augment": {"flip": False, "crop": False}, "batch_size": 2, "iterations": 4, "eval_every": 100,
            "checkpoint_every": 1, "log_every": 1, "output_dir": str(folder / "run"), "device": "cpu",
            "amp": False, "num_workers": 0,
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.yaml").write_text(yaml.safe_dump(config))
        return folder / "train.yaml"

    return write


@pytest.fixture(scope="module")
def reference_weights(write_config: Callable[[Path], Path],
                      tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The exported head of an undisturbed run."""
    folder = tmp_path_factory.mktemp("reference")
    assert main(["train", str(write_config(folder)), "--no-progress"]) == 0
    return load_file(str(folder / "run" / "final" / "model.safetensors"))


def assert_resumes_to(config: Path, weights: dict[str, torch.Tensor]) -> None:
    assert main(["train", str(config), "--no-progress", "--resume"]) == 0
    resumed = load_file(str(config.parent / "run" / "final" / "model.safetensors"))
    assert resumed.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(resumed[key], value), f"{key} differs after resume"


def test_a_full_disk_while_saving_the_state(write_config, reference_weights, tmp_path: Path, monkeypatch,
                                            capsys) -> None:
    config = write_config(tmp_path)
    states = tmp_path / "run" / "checkpoints"
    full_disk(monkeypatch, state, "atomic_write", "step-000003.pt")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {states / 'step-000003.pt'}: No space left on device; free some disk "
                          f"space; the last saved training state {states / 'step-000002.pt'} is kept: continue "
                          "with --resume")
    assert sorted(path.name for path in states.iterdir()) == ["latest.json", "step-000001.pt", "step-000002.pt"]
    monkeypatch.undo()
    assert_resumes_to(config, reference_weights)


def test_a_full_disk_while_exporting_the_head(write_config, reference_weights, tmp_path: Path, monkeypatch,
                                              capsys) -> None:
    config = write_config(tmp_path)
    final, states = tmp_path / "run" / "final", tmp_path / "run" / "checkpoints"
    full_disk(monkeypatch, checkpoint, "atomic_write_bytes", "model.safetensors")
    assert main(["train", str(config), "--no-progress"]) == 2
    assert_one_error_line(capsys.readouterr().err,
                          f"cannot write {final / 'model.safetensors'}: No space left on device; free some disk "
                          f"space; the checkpoint {final} was not written; the last saved training state "
                          f"{states / 'step-000004.pt'} is kept: continue with --resume")
    assert list(final.iterdir()) == []
    monkeypatch.undo()
    assert_resumes_to(config, reference_weights)


def test_a_read_only_output_dir_is_refused_before_any_work(write_config, tmp_path: Path) -> None:
    prefix = unprivileged_prefix(tmp_path)
    config = write_config(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    done = run_read_only(run, prefix, "train", str(config), "--no-progress")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, f"output_dir {run}: this user may not write in {run}")
    assert list(run.iterdir()) == []


def test_a_read_only_checkpoint_folder_keeps_the_last_state(write_config, tmp_path: Path, capsys) -> None:
    prefix = unprivileged_prefix(tmp_path)
    config = write_config(tmp_path)
    states = tmp_path / "run" / "checkpoints"
    assert main(["train", str(config), "--no-progress", "--set", "iterations=2"]) == 0
    capsys.readouterr()
    before = {path.name: path.read_bytes() for path in states.iterdir()}
    done = run_read_only(states, prefix, "train", str(config), "--no-progress", "--resume")
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr,
                          f"cannot write {states / 'step-000003.pt'}: Permission denied; make {states} writable or "
                          f"choose another folder; the last saved training state {states / 'step-000002.pt'} is "
                          "kept: continue with --resume")
    assert {path.name: path.read_bytes() for path in states.iterdir()} == before
