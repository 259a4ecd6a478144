"""The one source of configuration: nested dataclasses.

YAML and JSON only serialise these dataclasses; the command line overrides fields with dotted
keys (``fusion.depth=1``). Every field has a type hint, and values coming from text are
converted to that type, so a typo in a key or a value is an immediate, clear error.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from regionspot.presets import DEFAULT_CLIP, DEFAULT_SAM

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TokenPlace = Literal["prompt_encoder", "transformer", "hypernet_mlp"]
TOKEN_PLACES: tuple[str, ...] = typing.get_args(TokenPlace)
TemplateSet = Literal["single", "ensemble", "official"]
TEMPLATE_SETS: tuple[str, ...] = typing.get_args(TemplateSet)
ScoreFunction = Literal["sigmoid", "softmax"]
InputMode = Literal["native", "official"]
INPUT_MODES: tuple[str, ...] = typing.get_args(InputMode)
#: The LayerNorm eps of the original SAM code's two-way transformer (``nn.LayerNorm``'s default);
#: ``transformers``' SAM configs say 1e-6.
ORIGINAL_SAM_DECODER_EPS = 1e-5
ZeroShotMethod = Literal["clip-mask-crop", "clip-crop"]
ZERO_SHOT_METHODS: tuple[str, ...] = typing.get_args(ZeroShotMethod)


class ConfigError(ValueError):
    """A configuration key or value is wrong (unknown key, wrong type, bad choice)."""


def as_zero_shot_method(name: str) -> ZeroShotMethod:
    """``name`` as a :data:`ZeroShotMethod`, or ConfigError naming the choices."""
    for method in typing.get_args(ZeroShotMethod):
        if name == method:
            return method  # typing.get_args is untyped (Any)
    raise ConfigError(f"zero-shot method {name!r} is not one of {list(ZERO_SHOT_METHODS)}")


@dataclass
class SamBackboneConfig:
    """The frozen SAM-family side that gives one position-aware token per box.

    ``name_or_path`` is a Hugging Face Hub id (``facebook/sam-vit-base``), a local folder written
    by ``SamModel.save_pretrained``, or a path to an original-layout ``.pt`` checkpoint
    (SAM ViT-B/L/H or MobileSAM).

    ``decoder_layer_norm_eps``: the eps of the mask decoder's two-way transformer LayerNorms.
    None: the checkpoint's own (1e-5 for an original-layout ``.pt``, as the original SAM code;
    a Hugging Face config's ``layer_norm_eps``, usually 1e-6). A head must run with the eps of the
    SAM that made its training tokens, so training records it here and loading applies it.
    """

    name_or_path: str = DEFAULT_SAM
    token_place: TokenPlace = "transformer"
    multimask: bool = False
    decoder_layer_norm_eps: float | None = field(default=None, metadata={"above": 0.0, "max": 0.1})


@dataclass
class ClipBackboneConfig:
    """The frozen CLIP-family vision side that gives the whole-image memory.

    ``image_size`` None means the tower's own input size; another value interpolates the
    position embeddings. ``enabled`` False is the paper's "no CLIP vision" ablation (Table 4a).
    """

    name_or_path: str = DEFAULT_CLIP
    image_size: int | None = field(default=None, metadata={"min": 1})
    use_class_token: bool = True
    enabled: bool = True


@dataclass
class TextConfig:
    """Text embeddings: the CLIP text tower of ``name_or_path`` (None: the CLIP backbone's)
    with the single template or the template ensemble, or a precomputed bank (``bank``:
    an ``.npy`` matrix with a ``*_names.json`` beside it) standing in for the tower.
    ``memory_names`` / ``disk_names``: how many names' embeddings the tower's caches keep in
    memory and in its file under ``cache_dir`` (least recently used dropped first)."""

    name_or_path: str | None = None
    templates: TemplateSet = "ensemble"
    bank: str | None = None
    cache_dir: str | None = None
    memory_names: int = field(default=10_000, metadata={"min": 1})
    disk_names: int = field(default=20_000, metadata={"min": 1})


@dataclass
class FusionConfig:
    """The trainable fusion module: the paper's cross-modal feature interaction (Fig. 2b) and the
    cosine scoring of its region-text alignment (Fig. 2a). ``depth`` is ablated in the paper's
    Table 4c; ``heads``, ``ffn_dim`` and ``dropout`` default to the
    authors' release (8, 2048, 0.1).

    ``token_dim`` is the SAM token width, ``width`` the CLIP vision width (the memory's
    channels), ``text_dim`` the text-embedding width; ``from_backbones`` fills all three.
    """

    token_dim: int = field(default=256, metadata={"min": 1})
    width: int = field(default=768, metadata={"min": 1, "multiple_of": "heads"})
    text_dim: int = field(default=512, metadata={"min": 1})
    depth: int = field(default=3, metadata={"min": 0})
    heads: int = field(default=8, metadata={"min": 1})
    ffn_dim: int = field(default=2048, metadata={"min": 1})
    dropout: float = field(default=0.1, metadata={"min": 0.0, "below": 1.0})
    region_self_attention: bool = True
    logit_scale: float = 100.0
    # Inference scores from the logits (no weights involved): "sigmoid" (per (region, name),
    # the function training uses) or "softmax" over the vocabulary (the authors' evaluation rule;
    # converted official checkpoints use it so that their LVIS numbers can be reproduced).
    score_function: ScoreFunction = "sigmoid"


@dataclass
class RegionSpotConfig:
    """Everything needed to rebuild a RegionSpot model (stored as ``config.json``)."""

    sam: SamBackboneConfig = field(default_factory=SamBackboneConfig)
    clip: ClipBackboneConfig = field(default_factory=ClipBackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # What the towers are fed: "native" (this library's pipeline: each tower resizes the photo
    # once; prompts normalised one by one; names cleaned) or "official" (exactly the authors'
    # LVIS evaluation: detectron2's 800/1333 resize first, SAM decoder eps 1e-5, their 81 templates
    # on raw names; see regionspot.ops.official_inputs). convert-official writes "official".
    inputs: InputMode = "native"



def backbone_config(config: RegionSpotConfig) -> RegionSpotConfig:
    """The configuration the backbones are built from. ``inputs="official"`` fixes what the
    authors' evaluation fixed, whatever else the config says: SAM's two-way transformer eps
    (:data:`ORIGINAL_SAM_DECODER_EPS`) and their text recipe (``text.templates="official"``)."""
    if config.inputs != "official":
        return config
    return dataclasses.replace(
        config, sam=dataclasses.replace(config.sam, decoder_layer_norm_eps=ORIGINAL_SAM_DECODER_EPS),
        text=dataclasses.replace(config.text, templates="official"))

@dataclass
class ZeroShotConfig:
    """The training-free recognizer (:class:`regionspot.model.zero_shot.ZeroShotCLIP`): SAM for
    masks, CLIP zero-shot on each region's crop (the paper's Table 1 baselines). ``method``:
    ``clip-mask-crop`` (pixels outside the SAM mask blanked; the better baseline, 49.2 vs 48.7
    LVIS AP with ground-truth boxes) or ``clip-crop`` (the box as it is)."""

    sam: SamBackboneConfig = field(default_factory=SamBackboneConfig)
    clip: ClipBackboneConfig = field(default_factory=ClipBackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    method: ZeroShotMethod = "clip-mask-crop"


@dataclass
class AugmentConfig:
    """The paper's training augmentation, as in the authors' release: horizontal flip, short edge
    resized to [min_short, max_short] (480-800 there), random crop. Applied by
    :mod:`regionspot.datasets.augment`; a training config holds it as ``augment``
    (:class:`regionspot.train.config.TrainConfig`, which also checks the ``above`` / ``max`` bounds)."""

    flip: bool = True
    min_short: int = field(default=480, metadata={"min": 1})
    max_short: int = field(default=800, metadata={"min": 1})
    max_long: int = field(default=1333, metadata={"min": 1})
    crop: bool = True
    crop_min_fraction: float = field(default=0.5, metadata={"above": 0.0, "max": 1.0})


C = TypeVar("C", bound="DataclassInstance")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass instance as plain nested dicts (JSON/YAML friendly)."""
    return dataclasses.asdict(config)


def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "") -> C:
    """Build dataclass ``cls`` from nested dicts, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(names)}")
    values = {}
    for key, raw in data.items():
        path = f"{where}.{key}" if where else key
        values[key] = _convert(hints[key], raw, path)
    instance = cls(**values)
    check_limits(instance, where)
    return instance


def check_limits(config: Any, where: str = "") -> None:
    """ConfigError for a field of dataclass instance ``config`` outside the range its ``metadata``
    states: ``min`` / ``max`` (inclusive), ``above`` / ``below`` (exclusive), ``multiple_of`` (the
    name of a sibling field). None values are not checked (an optional field left unset)."""
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if value is None or not spec.metadata:
            continue
        path = f"{where}.{spec.name}" if where else spec.name
        low, below, divisor = (spec.metadata.get(key) for key in ("min", "below", "multiple_of"))
        if low is not None and not value >= low:
            raise ConfigError(f"{path} must be at least {low}, got {value!r}")
        if below is not None and not value < below:
            raise ConfigError(f"{path} must be below {below}, got {value!r}")
        above, most = spec.metadata.get("above"), spec.metadata.get("max")
        if above is not None and not value > above:
            raise ConfigError(f"{path} must be above {above:g}, got {value!r}")
        if most is not None and not value <= most:
            raise ConfigError(f"{path} must be at most {most:g}, got {value!r}")
        other = getattr(config, divisor) if divisor else None
        if isinstance(other, int) and other >= 1 and value % other:
            sibling = f"{where}.{divisor}" if where else divisor
            raise ConfigError(f"{path} {value} must be a multiple of {sibling} {other}")


def _convert(hint: Any, raw: Any, path: str) -> Any:
    """Convert ``raw`` to the type ``hint`` (dataclass, Literal, Optional, scalars)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, raw, where=path)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(raw, str):  # command line: comma-separated
            raw = [_parse_text_value(part.strip()) for part in raw.split(",") if part.strip()]
        if not isinstance(raw, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {raw!r}")
        return [_convert(item, value, f"{path}.{i}") for i, value in enumerate(raw)]
    if origin is Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise ConfigError(f"{path}: {raw!r} is not one of {list(choices)}")
        return raw
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        is_none = raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, raw, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors) or f"{path}: cannot convert {raw!r}")
    return _convert_scalar(hint, raw, path)


def _convert_scalar(hint: Any, raw: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{path}: expected true/false, got {raw!r}")
    if hint in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {raw!r}")
        try:
            value = hint(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {raw!r}") from None
        if hint is int and isinstance(raw, float) and value != raw:
            raise ConfigError(f"{path}: expected an integer, got {raw!r}")
        return value
    if hint is str:
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ConfigError(f"{path}: expected a string, got {raw!r}")
        return str(raw)
    raise ConfigError(f"{path}: unsupported field type {hint!r}")


def apply_overrides(config: C, overrides: list[str] | tuple[str, ...]) -> C:
    """Return a copy of ``config`` with ``key.sub=value`` overrides applied, typed by the field."""
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, key)
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])!r} is not a section")
        last = parts[-1]
        current = _child(node, last, key)
        if isinstance(current, dict):
            raise ConfigError(f"override {key!r}: {key!r} is a section, not a section field; "
                              f"set one of its fields: {sorted(current)}")
        if isinstance(node, list):
            node[int(last)] = _parse_text_value(value)
        else:
            node[last] = _parse_text_value(value)
    return from_dict(type(config), data)


def _child(node: Any, part: str, key: str) -> Any:
    """``node[part]`` for a dict key or a list index, with a clear error when absent."""
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"override {key!r}: {part!r} is not an index of a {len(node)}-item list")
        return node[int(part)]
    if not isinstance(node, dict) or part not in node:
        known = sorted(node) if isinstance(node, dict) else []
        raise ConfigError(f"override {key!r}: unknown key {part!r}; known here: {known}")
    return node[part]


def _parse_text_value(text: str) -> Any:
    """A command-line value: YAML scalars (``3``, ``0.1``, ``true``, ``null``) or a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


def save_config(config: Any, path: str | Path) -> None:
    """Write ``config`` as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    data = to_dict(config)
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(json.dumps(data, indent=2) + "\n")


def load_config(cls: type[C], path: str | Path) -> C:
    """Read a YAML or JSON file written by :func:`save_config` (or by hand) into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    return from_dict(cls, data or {})
