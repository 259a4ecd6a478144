"""Training configuration: nested dataclasses (YAML only serialises them; ``key=value`` on the
command line overrides fields, list items by index: ``datasets.0.ratio=2``).

Defaults are the paper's training recipe, with the values of the authors' released configs
(AdamW 2.5e-5, weight decay 1e-4, 1000 warm-up iterations, batch 16 images, lr / 10 at 350k and
420k of 450k iterations, clipping at 1.0, focal loss 0.25 / 2).

Impossible values are refused with a :class:`~regionspot.config.ConfigError` naming the field
when a :class:`TrainConfig` is built (from YAML, ``--set`` overrides or Python), before any
model loads. Field ranges are stated in the field's ``metadata`` as
:func:`regionspot.config.check_limits` reads them (``above`` 0 for a learning rate: 0 trains
nothing).

:class:`~regionspot.config.AugmentConfig` (the ``augment`` section) lives in
:mod:`regionspot.config`, below the data layer that applies it; it is importable from here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from regionspot.config import AugmentConfig, ConfigError, RegionSpotConfig, check_limits

POSITIVE = {"above": 0.0}
AT_LEAST_ONE = {"min": 1}
NOT_NEGATIVE = {"min": 0}


@dataclass
class DatasetConfig:
    """One COCO-format dataset (LVIS, Objects365, V3Det, converted OpenImages, your own).

    ``vocabulary``: None takes the category names of the JSON (cleaned for prompts); otherwise a
    vocabulary spec (file or built-in name) whose i-th name is the i-th category in id order.
    ``ratio``: sampling weight among datasets (equal in the authors' release). ``max_vocabulary``: for very large
    vocabularies (V3Det, ~13k names) score each batch against its positives plus sampled
    negatives up to this many names (None: the whole vocabulary). ``token_cache``: folder of the
    SAM token cache made by ``regionspot extract-tokens`` (None: run SAM online).
    ``memory_cache``: folder of cached CLIP memories (augmentation-free runs only).
    """

    name: str = "coco"
    annotations: str = ""
    images: str = ""
    ratio: float = field(default=1.0, metadata=POSITIVE)
    vocabulary: str | None = None
    max_vocabulary: int | None = field(default=None, metadata=AT_LEAST_ONE)
    token_cache: str | None = None
    memory_cache: str | None = None


@dataclass
class OptimConfig:
    """AdamW and its schedule. ``grad_clip`` <= 0 switches clipping off."""

    lr: float = field(default=2.5e-5, metadata=POSITIVE)
    weight_decay: float = field(default=1e-4, metadata=NOT_NEGATIVE)
    warmup_iterations: int = field(default=1000, metadata=NOT_NEGATIVE)
    decay_at: list[int] = field(default_factory=lambda: [350_000, 420_000])
    decay_factor: float = field(default=0.1, metadata=POSITIVE)
    grad_clip: float = 1.0


@dataclass
class LossConfig:
    """Sigmoid focal loss against one-hot targets over the batch's vocabulary (``alpha`` < 0:
    no class weighting)."""

    alpha: float = field(default=0.25, metadata={"max": 1.0})
    gamma: float = field(default=2.0, metadata=NOT_NEGATIVE)


@dataclass
class TrainConfig:
    """A whole training run. ``batch_size`` is global (images per step over all processes).

    ``init_from``: a RegionSpot checkpoint whose head initialises this run (stage 2 starts from
    stage 1). ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``. ``amp``: mixed
    precision where the device supports it (bf16 on CUDA; off on CPU).
    """

    model: RegionSpotConfig = field(default_factory=RegionSpotConfig)
    datasets: list[DatasetConfig] = field(default_factory=lambda: [DatasetConfig()])
    eval_dataset: DatasetConfig | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    batch_size: int = field(default=16, metadata=AT_LEAST_ONE)
    max_regions_per_image: int = field(default=100, metadata=AT_LEAST_ONE)
    iterations: int = field(default=450_000, metadata=AT_LEAST_ONE)
    eval_every: int = field(default=5_000, metadata=AT_LEAST_ONE)
    checkpoint_every: int = field(default=1_000, metadata=AT_LEAST_ONE)
    log_every: int = field(default=20, metadata=AT_LEAST_ONE)
    output_dir: str = "runs/regionspot"
    init_from: str | None = None
    seed: int = field(default=0, metadata=NOT_NEGATIVE)
    device: str = "auto"
    amp: bool = True
    num_workers: int = field(default=2, metadata=NOT_NEGATIVE)

    def __post_init__(self) -> None:
        check_train_config(self)


def check_train_config(config: TrainConfig) -> None:
    """ConfigError naming the first field of ``config`` (at any depth) outside its range, or
    the first pair of fields that contradict each other."""
    _check_ranges(config, "")
    if config.augment.min_short > config.augment.max_short:
        raise ConfigError(f"augment.min_short {config.augment.min_short} must not exceed augment.max_short "
                          f"{config.augment.max_short}")
    negative = [step for step in config.optim.decay_at if step < 0]
    if negative:
        raise ConfigError(f"optim.decay_at: steps must be at least 0, got {negative}")


def _check_ranges(config: Any, where: str) -> None:
    """:func:`check_limits` on ``config`` and on every dataclass inside it (list items by index)."""
    check_limits(config, where)
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        path = f"{where}.{spec.name}" if where else spec.name
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if dataclasses.is_dataclass(item) and not isinstance(item, type):
                _check_ranges(item, f"{path}.{index}" if isinstance(value, list) else path)
