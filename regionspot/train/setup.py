"""Building what a training run needs from its configuration, with the checks that catch a bad
configuration before any compute is spent."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from regionspot.backbones.clip_vision import build_image_memory_encoder
from regionspot.backbones.sam import build_region_tokenizer
from regionspot.backbones.text import build_text_embedder
from regionspot.config import ConfigError
from regionspot.datasets.coco_format import CocoDataset
from regionspot.model.checkpoint import read_checkpoint, resolve_checkpoint
from regionspot.model.regionspot import RegionSpot, fitted_fusion_config, recorded_sam_config
from regionspot.train.batches import DataSource
from regionspot.train.config import DatasetConfig, TrainConfig, check_train_config


def check_config(config: TrainConfig, world_size: int) -> None:
    """Refuse configurations that cannot train correctly, with the field to change. The field
    ranges are checked again (:func:`check_train_config`), for a config changed after it was built."""
    check_train_config(config)
    if not config.datasets:
        raise ConfigError("datasets: at least one dataset is needed")
    if config.batch_size % world_size:
        raise ConfigError(f"batch_size {config.batch_size} must be a positive multiple of the number of "
                          f"processes ({world_size})")
    if config.model.inputs != "native":
        raise ConfigError("model.inputs: training feeds the head this library's own inputs; set model.inputs=native "
                          "('official' reproduces the authors' evaluation of their released heads)")
    names = [d.name for d in config.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"dataset names must be distinct, got {names}")
    augmenting = config.augment.flip or config.augment.crop
    for dataset in config.datasets:
        if dataset.token_cache and config.augment.crop:
            raise ConfigError(f"datasets {dataset.name}: cached SAM tokens were computed on the whole image, so "
                              "a random crop would put each box somewhere else for CLIP than for SAM; set "
                              "augment.crop=false (flip and scale stay consistent) or drop token_cache to run "
                              "SAM online on every crop")
        if dataset.memory_cache and augmenting:
            raise ConfigError(f"datasets {dataset.name}: a CLIP memory cache holds un-augmented images; "
                              "set augment.flip=false and augment.crop=false to use it")


def build_training_model(config: TrainConfig) -> RegionSpot:
    """Backbones named by ``config.model``, head widths read off them, and the head initialised
    from ``config.init_from`` (stage 2 from stage 1) when given (strictly). The SAM decoder's
    LayerNorm eps the tokens are made with is recorded in the head's config, so the head runs
    with it wherever it is loaded."""
    model_config = config.model
    tokenizer = build_region_tokenizer(model_config.sam)
    image_encoder = build_image_memory_encoder(model_config.clip)
    text = build_text_embedder(model_config.text, model_config.clip.name_or_path)
    fusion = fitted_fusion_config(model_config.fusion, tokenizer, image_encoder, text)
    sam = recorded_sam_config(model_config.sam, tokenizer)
    model_config = dataclasses.replace(model_config, fusion=fusion, sam=sam)
    model = RegionSpot(model_config, tokenizer, image_encoder, text)
    if config.init_from:
        folder = resolve_checkpoint(config.init_from)
        _, state = read_checkpoint(folder)
        model.load_head_state(state, what=f"init_from {folder}")
    return model


def build_sources(config: TrainConfig, datasets: Sequence[DatasetConfig], model: RegionSpot) -> list[DataSource]:
    """Datasets with their caches opened and checked against the model's backbones."""
    sources = []
    for spec in datasets:
        dataset = CocoDataset(spec.annotations, spec.images, name=spec.name, vocabulary=spec.vocabulary)
        if len(dataset) == 0:
            raise ConfigError(f"datasets {spec.name}: no image with a usable box in {spec.annotations}")
        token_cache = memory_cache = None
        if spec.token_cache:
            from regionspot.cache.token_cache import TokenCache

            token_cache = TokenCache.open(spec.token_cache, model.region_tokenizer, dataset=dataset)
            if config.augment.flip and True not in token_cache.flips:
                raise ConfigError(f"datasets {spec.name}: augment.flip needs flipped tokens; the cache "
                                  f"{spec.token_cache} has none (extract without --no-flip)")
        if spec.memory_cache and model.image_encoder is not None:
            from regionspot.cache.memory_cache import MemoryCache

            memory_cache = MemoryCache.open(spec.memory_cache, model.image_encoder, dataset=dataset)
        sources.append(DataSource(dataset, spec.max_vocabulary, token_cache, memory_cache))
    return sources
