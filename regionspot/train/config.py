"""Training configuration: nested dataclasses (YAML only serialises them; ``key=value`` on the
command line overrides fields, list items by index: ``datasets.0.ratio=2``).

Defaults are SPEC's recipe (AdamW 2.5e-5, weight decay 1e-4, 1000 warm-up iterations, batch 16
images, lr / 10 at 350k and 420k of 450k iterations, clipping at 1.0, focal loss 0.25 / 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from regionspot.config import RegionSpotConfig


@dataclass
class DatasetConfig:
    """One COCO-format dataset (LVIS, Objects365, V3Det, converted OpenImages, your own).

    ``vocabulary``: None takes the category names of the JSON (cleaned for prompts); otherwise a
    vocabulary spec (file or built-in name) whose i-th name is the i-th category in id order.
    ``ratio``: sampling weight among datasets (SPEC: equal). ``max_vocabulary``: for very large
    vocabularies (V3Det, ~13k names) score each batch against its positives plus sampled
    negatives up to this many names (None: the whole vocabulary). ``token_cache``: folder of the
    SAM token cache made by ``regionspot extract-tokens`` (None: run SAM online).
    ``memory_cache``: folder of cached CLIP memories (augmentation-free runs only).
    """

    name: str = "coco"
    annotations: str = ""
    images: str = ""
    ratio: float = 1.0
    vocabulary: str | None = None
    max_vocabulary: int | None = None
    token_cache: str | None = None
    memory_cache: str | None = None


@dataclass
class AugmentConfig:
    """SPEC: horizontal flip, short edge resized to [min_short, max_short], random crop."""

    flip: bool = True
    min_short: int = 480
    max_short: int = 800
    max_long: int = 1333
    crop: bool = True
    crop_min_fraction: float = 0.5


@dataclass
class OptimConfig:
    lr: float = 2.5e-5
    weight_decay: float = 1e-4
    warmup_iterations: int = 1000
    decay_at: list[int] = field(default_factory=lambda: [350_000, 420_000])
    decay_factor: float = 0.1
    grad_clip: float = 1.0


@dataclass
class LossConfig:
    """Sigmoid focal loss against one-hot targets over the batch's vocabulary."""

    alpha: float = 0.25
    gamma: float = 2.0


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
    batch_size: int = 16
    max_regions_per_image: int = 100
    iterations: int = 450_000
    eval_every: int = 5_000
    checkpoint_every: int = 1_000
    log_every: int = 20
    output_dir: str = "runs/regionspot"
    init_from: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 2
