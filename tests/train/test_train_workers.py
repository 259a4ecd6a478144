"""Training batches prepared by DataLoader workers (``num_workers``): the same batches in the same
order as preparing them in the training process, and a run stopped and resumed with workers ends
with the same weights, bit for bit, as one run without a stop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from regionspot.cli.main import main
from regionspot.config import apply_overrides, load_config
from regionspot.prefetch import prefetched
from regionspot.processes import DistributedContext
from regionspot.train import trainer
from regionspot.train.config import TrainConfig


def test_workers_prepare_the_same_batches_in_order(tiny_train_config: Callable[[Path], Path], tmp_path: Path) -> None:
    config = apply_overrides(load_config(TrainConfig, tiny_train_config(tmp_path)),
                             ["augment.flip=true", "augment.crop=true", "iterations=6"])  # random choices to agree on
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    preparer = trainer.Trainer(config, context, progress=False).step_preparer()
    here = list(prefetched(range(6), preparer, workers=0))
    ahead = list(prefetched(range(6), preparer, workers=2))
    assert [step for step, _ in ahead] == list(range(6))
    for (_, (dataset_a, mine)), (_, (dataset_b, theirs)) in zip(here, ahead, strict=True):
        assert dataset_a == dataset_b
        np.testing.assert_array_equal(mine.vocabulary, theirs.vocabulary)
        assert len(mine.images) == len(theirs.images) == 2
        for a, b in zip(mine.images, theirs.images, strict=True):
            assert a.image is not None and b.image is not None  # no token cache: SAM runs on the augmented image
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.labels, b.labels)


def test_a_run_resumed_with_workers_ends_as_one_run(tiny_train_config: Callable[[Path], Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ["--set", "num_workers=2", "model.fusion.dropout=0.1"]  # dropout: the RNG must resume exactly too
    whole = tiny_train_config(tmp_path / "whole")
    assert main(["train", str(whole), "--no-progress", *settings]) == 0
    stopped = tiny_train_config(tmp_path / "stopped")
    real, calls = trainer.sigmoid_focal_loss, [0]

    def nan_at_step_three(*args: object, **kwargs: object) -> torch.Tensor:
        calls[0] += 1
        value = real(*args, **kwargs)  # type: ignore[arg-type]
        return value * float("nan") if calls[0] == 3 else value

    monkeypatch.setattr(trainer, "sigmoid_focal_loss", nan_at_step_three)
    assert main(["train", str(stopped), "--no-progress", *settings]) == 2  # stops at step 3, step 2 saved
    monkeypatch.undo()
    assert main(["train", str(stopped), "--no-progress", "--resume", *settings]) == 0
    ours, theirs = (load_file(str(folder / "run" / "final" / "model.safetensors"))
                    for folder in (tmp_path / "whole", tmp_path / "stopped"))
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=0, atol=0, msg=f"{key} differs after resume")
