"""Configuration of a dataset evaluation or batch prediction run: nested dataclasses, serialised
and overridden with :mod:`regionspot.config`'s helpers (``to_dict``, ``from_dict``,
``apply_overrides``, ``save_config`` / ``load_config``).

Ablation switches, and whether a checkpoint must have been trained with them:

- inference-only (valid on any checkpoint): ``method``, ``prompt`` (regions prompted together
  or alone), ``model.overrides`` ``text.templates=single|ensemble``, and everything in
  ``protocol`` and ``auto``;
- architecture (the head's weights differ; a strict checkpoint load fails otherwise, and says
  so): ``clip.enabled`` (no CLIP vision: no cross-attention), ``sam.token_place`` (token width),
  ``fusion.depth``, ``fusion.heads``, ``fusion.ffn_dim``, ``fusion.region_self_attention``;
- input (the weights load, but a head trained otherwise measures a mismatch, not the
  ablation): ``clip.use_class_token``, ``clip.image_size``, ``sam.multimask``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Literal

from regionspot.config import ConfigError
from regionspot.model.loader import (  # noqa: F401 - part of this API
    ARCHITECTURE_KEYS,
    INPUT_KEYS,
    ModelSource,
    architecture_overrides,
    split_model_overrides,
)
from regionspot.proposals.auto import AutoProposalConfig, check_auto_config

Method = Literal["regionspot", "clip-crop", "clip-mask-crop"]
PromptMode = Literal["together", "alone"]
METHOD_CHOICES: tuple[str, ...] = typing.get_args(Method)
PROMPT_CHOICES: tuple[str, ...] = typing.get_args(PromptMode)
BOX_SOURCES = ("gt", "auto")  # anything else is a proposals file

@dataclass
class ProtocolConfig:
    """How (box, category) pairs become detections (the paper's LVIS protocol, as the authors'
    release implements it).

    ``pairs_per_box``: categories kept per box (None: the whole vocabulary, up to
    ``pairs_per_image``). ``pairs_per_image``: the image's best (box, category) pairs kept, by
    final score = class score x proposal score (900 as in the authors' release).
    ``max_dets_per_image``: the evaluator's cap over all categories (None: the rules' own, 300
    for LVIS and none for COCO, whose AP keeps 100 per image and category; 0: no cap).
    ``fixed_ap_budget``: also the LVIS fixed-AP protocol with this per-category budget.
    ``proposal_scores``: multiply class scores by a detector file's / auto proposals' scores
    (ground-truth boxes score 1). ``federated``: LVIS rules on/off (None: from the annotation).
    ``keep_zero_area``: under LVIS rules keep detections and ground truth of area 0 (as false
    positives, pycocotools' way) instead of leaving them out (lvis-api's rule, the default).
    """

    pairs_per_box: int | None = None
    pairs_per_image: int = 900
    max_dets_per_image: int | None = None
    fixed_ap_budget: int | None = None
    proposal_scores: bool = True
    federated: bool | None = None
    keep_zero_area: bool = False


@dataclass
class EvalConfig:
    """One evaluation (``regionspot eval``) or batch prediction (``regionspot predict-batch``).

    ``annotations``: COCO/LVIS JSON (None for a folder of images); ``images``: image folder
    (None: ``images/`` beside the annotation). ``boxes``: ``gt`` (the annotation's non-crowd
    boxes), ``auto`` (SAM point-grid proposals, see ``auto``) or a proposals file.
    ``vocabulary``: names for the annotation's categories in id order (None: their cleaned
    names). ``frequencies``: a file giving LVIS ``r``/``c``/``f`` tags per category id.
    ``max_images``: evaluate only the first N images by id. ``examples``: pictures drawn.
    ``method``: the recognizer that names the regions (None: the model's own: ``regionspot`` for
    a head, ``clip-mask-crop`` for the zero-shot default); ``model``: where the model comes from.
    ``image_workers``: processes decoding the next images while the model works on the current
    one (None: 2 on a GPU, where decoding would make the GPU wait, 0 on the CPU, where they would
    compete with the model for the same cores). ``image_batch``: images whose SAM and CLIP
    encoders run as one batch (None: 8 on a GPU, 1 on the CPU, where a batch is no faster).
    """

    annotations: str | None = None
    images: str | None = None
    method: Method | None = None
    boxes: str = "gt"
    prompt: PromptMode = "together"
    masks: bool = False
    vocabulary: str | None = None
    frequencies: str | None = None
    max_images: int | None = None
    examples: int = 4
    save_detections: bool = False
    image_workers: int | None = None
    image_batch: int | None = None
    model: ModelSource = field(default_factory=ModelSource)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    auto: AutoProposalConfig = field(default_factory=AutoProposalConfig)


def check_eval_config(config: EvalConfig) -> EvalConfig:
    """``config`` unchanged when usable, else :class:`ConfigError` naming the field."""
    protocol = config.protocol
    _positive(protocol.pairs_per_image, "protocol.pairs_per_image")
    for name in ("pairs_per_box", "fixed_ap_budget"):
        if getattr(protocol, name) is not None:
            _positive(getattr(protocol, name), f"protocol.{name}")
    if protocol.max_dets_per_image is not None and protocol.max_dets_per_image < 0:
        raise ConfigError(f"protocol.max_dets_per_image must be >= 0 (0: no cap), got {protocol.max_dets_per_image}")
    if config.max_images is not None:
        _positive(config.max_images, "max_images")
    if config.examples < 0:
        raise ConfigError(f"examples must be >= 0, got {config.examples}")
    if config.image_workers is not None and (isinstance(config.image_workers, bool) or config.image_workers < 0):
        raise ConfigError(f"image_workers must be >= 0 (or unset: 2 on a GPU, 0 on the CPU), got "
                          f"{config.image_workers!r}")
    if config.image_batch is not None:
        _positive(config.image_batch, "image_batch")
    if config.method is not None and config.method not in METHOD_CHOICES:
        raise ConfigError(f"method {config.method!r} is not one of {list(METHOD_CHOICES)}")
    if config.prompt not in PROMPT_CHOICES:
        raise ConfigError(f"prompt {config.prompt!r} is not one of {list(PROMPT_CHOICES)}")
    if not config.boxes:
        raise ConfigError("boxes must be 'gt', 'auto' or a proposals file")
    check_auto_config(config.auto)
    return config


def _positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


#: Dotted ``key=value`` items -> (model-config overrides, eval-config overrides).
split_overrides = split_model_overrides
