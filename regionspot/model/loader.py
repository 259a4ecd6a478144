"""The one model loader: every command (``predict``, ``predict-batch``, ``eval``, ``serve``,
``bench``, ``info``, ``download``) and :func:`regionspot.load` turn a model source into a ready
recognizer here.

    model = load()                                   # zero-shot CLIP on SAM masks (no training)
    model = load("regionspot_bl.pth")                # the authors' released file, converted in memory
    model = load("my-head", device="cuda")           # a RegionSpot folder or Hub repo id, on a GPU
    model = load(untrained=True, sam=".cache/mobile_sam.pt")  # a random head on MobileSAM + the default CLIP

Sources (:class:`ModelSource`): nothing -> :class:`~regionspot.model.zero_shot.ZeroShotCLIP` on the
default backbones (BB's of :mod:`regionspot.presets`; ``sam`` / ``clip`` replace them); a folder or
Hub id -> RegionSpot.from_pretrained; an existing file -> the authors' ``.pth`` (detected by its key
layout, variant read from the weight shapes); ``untrained`` -> a fresh, seeded head (for training
and debugging; its labels are random).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from regionspot.config import (
    ClipBackboneConfig,
    ConfigError,
    RegionSpotConfig,
    SamBackboneConfig,
    ZeroShotConfig,
    apply_overrides,
    as_zero_shot_method,
)
from regionspot.devices import check_precision, choose_device
from regionspot.model.recognizer import METHODS, RUNTIMES
from regionspot.model.regionspot import RegionSpot, decoder_eps
from regionspot.model.zero_shot import ZeroShotCLIP
from regionspot.presets import BY_VARIANT
from regionspot.weights import CheckpointError

Model = RegionSpot | ZeroShotCLIP
Log = Callable[[str], None]

#: Model-config keys whose change alters the head's weights (a checkpoint must be trained so).
ARCHITECTURE_KEYS = ("clip.enabled", "sam.token_place", "fusion.depth", "fusion.heads", "fusion.ffn_dim",
                     "fusion.region_self_attention")
#: Model-config keys that change what the head sees without changing its weights.
INPUT_KEYS = ("clip.use_class_token", "clip.image_size", "sam.multimask", "sam.decoder_layer_norm_eps", "inputs")


@dataclass
class ModelSource:
    """Where a model comes from (see the module docstring).

    ``checkpoint``: a RegionSpot folder, a Hub repo id, or the authors' ``.pth`` file; None: the
    zero-shot recognizer, or with ``untrained`` a fresh head seeded with ``seed``. ``sam`` /
    ``clip``: backbones replacing the default or the checkpoint's (a Hub id, a local folder, or a
    ``.pt`` file for SAM). ``method``: the recognizer asked for (``regionspot``, ``clip-crop``,
    ``clip-mask-crop``; None: the source's own). ``variant``: a variant of :mod:`regionspot.presets`
    (``bb``/``bl``/``bl336``) for an authors' file whose shapes cannot tell (None: read from the
    file). ``precision``: ``fp32``, ``bf16`` or ``fp16``. ``overrides``: dotted ``key=value``
    changes of the model config. ``runtime``: ``torch``, or ``onnx`` for a folder written by
    ``regionspot export onnx`` run in onnxruntime (CPU, fp32; :mod:`regionspot.model.onnx_runtime`).
    """

    checkpoint: str | None = None
    untrained: bool = False
    sam: str | None = None
    clip: str | None = None
    method: str | None = None
    variant: str | None = None
    seed: int = 0
    precision: str = "fp32"
    overrides: list[str] = field(default_factory=list)
    runtime: str = "torch"


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(checkpoint: str | Path | ModelSource | None = None, *, device: str | torch.device = "auto",
         precision: str | None = None, method: str | None = None, untrained: bool = False,
         sam: str | None = None, clip: str | None = None, overrides: Sequence[str] = (),
         log: Log | None = stderr_log) -> Model:
    """A ready recognizer: built from ``checkpoint`` (or a whole :class:`ModelSource`), moved to
    ``device`` (``auto``: a GPU when there is one) with its towers, head and memoised text
    embeddings, and set to ``precision``. ``log`` receives one line saying what was loaded
    (None: silent). Raises CheckpointError / BackboneLoadError / ConfigError / DeviceError with
    a message a user can act on."""
    if isinstance(checkpoint, ModelSource):
        source = checkpoint
    else:
        source = ModelSource(checkpoint=None if checkpoint is None else str(checkpoint), untrained=untrained,
                             sam=sam, clip=clip, method=method, overrides=list(overrides))
    if precision is not None:
        source = dataclasses.replace(source, precision=precision)
    if source.runtime == "onnx":
        device = _onnx_device(device, source.precision)
    target = choose_device(device)
    check_precision(source.precision, target)
    model = build_model(source, log=log)
    model = model.to(target)
    model.precision = source.precision
    return model


def build_model(source: ModelSource, *, log: Log | None = stderr_log) -> Model:
    """The recognizer of ``source`` on the CPU, in float32 (see :func:`load`)."""
    check_source(source)
    changed = architecture_overrides(source.overrides)
    hint = (f"; the override(s) {changed} change the head's architecture, so they need a checkpoint trained "
            "with them (or --untrained for a random head)") if changed else ""
    try:
        model = _build(source, log)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{hint}") from None
    except ValueError as exc:
        if type(exc) is not ValueError or not changed:
            raise
        raise ConfigError(f"{exc}{hint}") from None
    if source.method is not None and source.method != model.method:
        model = recognizer_for_method(source.method, model)
    inputs = [item for item in source.overrides if item.split("=", 1)[0].strip() in INPUT_KEYS]
    if log is not None:
        log(f"model: {describe_origin(model)}")
        if inputs and model.origin.get("head") in ("checkpoint", "official"):
            log(f"warning: {inputs} change what the head sees, not its weights: unless the checkpoint was trained "
                "so, this measures a mismatch, not the ablation")
        unrecorded = unrecorded_decoder_eps(model)
        if unrecorded is not None:
            log(f"note: the checkpoint does not record the SAM decoder LayerNorm eps its tokens were made with; "
                f"running with the SAM checkpoint's own ({unrecorded:g}); if it was trained with another, set "
                "sam.decoder_layer_norm_eps")
    return model


def unrecorded_decoder_eps(model: Model) -> float | None:
    """The SAM decoder eps a loaded RegionSpot checkpoint runs with when its config does not
    record one (heads saved before it was recorded), else None."""
    if not isinstance(model, RegionSpot) or model.origin.get("head") != "checkpoint":
        return None
    if model.config.sam.decoder_layer_norm_eps is not None or model.config.inputs == "official":
        return None
    return decoder_eps(model.region_tokenizer)


def check_source(source: ModelSource) -> None:
    """ConfigError for contradictory or unknown choices."""
    if source.runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {source.runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if source.runtime == "onnx":
        given = [name for name, value in (("--untrained", source.untrained), ("--sam", source.sam),
                                          ("--clip", source.clip)) if value]
        if source.checkpoint is None or given or source.method not in (None, "regionspot"):
            raise ConfigError("--runtime onnx runs a folder written by 'regionspot export onnx' as it was exported: "
                              "give it as --checkpoint, without " + (", ".join(given) or "--method"))
    if source.method is not None and source.method not in METHODS:
        raise ConfigError(f"unknown method {source.method!r}; choose one of {', '.join(METHODS)}")
    if source.untrained and source.checkpoint is not None:
        raise ConfigError("--untrained builds a fresh head; it cannot be combined with --checkpoint")
    if source.method == "regionspot" and source.checkpoint is None and not source.untrained:
        raise ConfigError("method 'regionspot' needs a RegionSpot head: give --checkpoint (a trained head, or the "
                          "authors' .pth), or --untrained for a random one")


def _build(source: ModelSource, log: Log | None) -> Model:
    if source.runtime == "onnx":
        from regionspot.model.onnx_runtime import load_onnx_model

        assert source.checkpoint is not None  # check_source
        return load_onnx_model(source.checkpoint, overrides=source.overrides)
    backbones = backbone_overrides(source)
    if source.untrained:
        if log is not None:
            log(f"warning: --untrained builds a fresh head with random weights (seed {source.seed}): masks are "
                "SAM's and real, labels are not")
        with torch.random.fork_rng(devices=[]):  # the same head in every process, global RNG untouched
            torch.manual_seed(source.seed)
            return RegionSpot.from_backbones(
                sam=source.sam or SamBackboneConfig.name_or_path, clip=source.clip or ClipBackboneConfig.name_or_path,
                overrides=source.overrides)
    if source.checkpoint is None:
        method = source.method if source.method not in (None, "regionspot") else "clip-mask-crop"
        return ZeroShotCLIP.from_config(ZeroShotConfig(method=as_zero_shot_method(method)),
                                        [*backbones, *source.overrides])
    path = Path(source.checkpoint)
    if path.is_file():
        return load_official(path, source.variant, [*backbones, *source.overrides], log)
    return RegionSpot.from_pretrained(source.checkpoint, overrides=[*backbones, *source.overrides])


def _onnx_device(device: str | torch.device, precision: str) -> str:
    """``cpu``: the one device and precision (fp32) the ONNX runtime runs in; DeviceError else."""
    from regionspot.devices import DeviceError

    if str(device).strip().lower() not in ("auto", "cpu"):
        raise DeviceError(f"--runtime onnx runs on the CPU (onnxruntime's CPU provider), not {device!r}; use "
                          "--device cpu, or the torch runtime on a GPU")
    if precision != "fp32":
        raise DeviceError(f"--runtime onnx runs the exported float32 graphs; precision {precision!r} is for the "
                          "torch runtime")
    return "cpu"


def backbone_overrides(source: ModelSource) -> list[str]:
    """``sam.name_or_path=...`` / ``clip.name_or_path=...`` for the backbones the source names."""
    items = []
    if source.sam:
        items.append(f"sam.name_or_path={source.sam}")
    if source.clip:
        items.append(f"clip.name_or_path={source.clip}")
    return items


def load_official(path: Path, variant: str | None, overrides: Sequence[str], log: Log | None) -> RegionSpot:
    """The authors' released ``.pth`` (detectron2 layout), converted in memory: the variant read
    from the weight shapes unless given, backbones those the variant names (or ``overrides``)."""
    from regionspot.model.official import convert_official_state, guess_variant, read_official_checkpoint

    state = read_official_checkpoint(path)
    try:
        found = variant or guess_variant(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path} is a file, so it was read as one of the authors' released RegionSpot "
                              f"checkpoints, but {exc}. A RegionSpot checkpoint of ours is a folder with "
                              "config.json and model.safetensors") from None
    config, head_state, _ = convert_official_state(state, found)
    config = apply_overrides(config, list(overrides))
    model = RegionSpot.from_config(config)
    model.load_head_state(head_state, what=f"the authors' checkpoint {path}")
    how = "given" if variant else "read from the weight shapes"
    spec = BY_VARIANT[found]
    model.origin = {"head": "official", "checkpoint": str(path), "variant": found,
                    "their_clip_type": spec.their_clip_type, "variant_from": how}
    if log is not None:
        log(f"detected the authors' RegionSpot-{spec.name} checkpoint ({spec.their_clip_type}, variant {how}); "
            "converted in memory")
    return model


def recognizer_for_method(method: str, model: Model) -> Model:
    """``model`` itself when it is of ``method``; a zero-shot recognizer on its towers for a crop
    method; ConfigError for ``regionspot`` asked of a model without a head."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == model.method:
        return model
    if method == "regionspot":
        raise ConfigError(f"method 'regionspot' needs a RegionSpot head (--checkpoint, or --untrained for a random "
                          f"one); the loaded model is the zero-shot recognizer ({model.method})")
    return ZeroShotCLIP.from_model(model, as_zero_shot_method(method))


def describe_origin(model: Model) -> str:
    """One line: which method answers, and where its weights come from (and, for an ONNX
    export, that onnxruntime runs it)."""
    origin = model.origin
    backbones = f"SAM {model.config.sam.name_or_path}, CLIP {model.config.clip.name_or_path}"
    if "onnx_export" in origin:
        backbones += f"; ONNX export {origin['onnx_export']} in onnxruntime"
    if model.method != "regionspot":
        return f"zero-shot {model.method} (CLIP on each region's crop, no trained head; {backbones})"
    head = origin.get("head")
    if head == "untrained":
        return f"regionspot with an UNTRAINED head (random labels; {backbones})"
    if head == "official":
        return f"regionspot, the authors' {origin['variant']} head from {origin['checkpoint']} ({backbones})"
    return f"regionspot head from {origin.get('checkpoint')} ({backbones})"


def split_model_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Dotted ``key=value`` items -> (model-config overrides, the others): an item whose first key
    is a section of the model config (``sam``, ``clip``, ``text``, ``fusion``) is a model override;
    the rest belong to the command's own configuration (evaluation, server)."""
    model_sections = {f.name for f in dataclasses.fields(RegionSpotConfig)}
    model: list[str] = []
    others: list[str] = []
    for item in items:
        key = item.split("=", 1)[0].strip()
        (model if key.split(".", 1)[0] in model_sections else others).append(item)
    return model, others


def architecture_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides among ``overrides`` that change the head's architecture."""
    return [item for item in overrides if item.split("=", 1)[0].strip() in ARCHITECTURE_KEYS]


def source_config(source: ModelSource) -> RegionSpotConfig | ZeroShotConfig:
    """The configuration ``source`` would build (backbone names included), without building any
    backbone: for ``regionspot download`` and ``regionspot info``. A Hub checkpoint is fetched."""
    check_source(source)
    backbones = [*backbone_overrides(source), *source.overrides]
    if source.untrained:
        return apply_overrides(RegionSpotConfig(), backbones)
    if source.checkpoint is None:
        return apply_overrides(ZeroShotConfig(), backbones)
    path = Path(source.checkpoint)
    if path.is_file():
        from regionspot.model.official import guess_variant, official_config, read_official_checkpoint

        variant = source.variant or guess_variant(read_official_checkpoint(path))
        return apply_overrides(official_config(variant), backbones)
    from regionspot.model.checkpoint import read_checkpoint, resolve_checkpoint

    config, _ = read_checkpoint(resolve_checkpoint(source.checkpoint))
    return apply_overrides(config, backbones)


def describe_model(model: Model, source: ModelSource | None) -> dict[str, Any]:
    """The model for a report: what answers, where it came from, its config and head size."""
    from regionspot.config import to_dict

    document = model.describe()
    document.update(source=None if source is None else to_dict(source), config=to_dict(model.config),
                    trainable_parameters=model.trainable_parameter_count() if isinstance(model, RegionSpot) else 0)
    return document
