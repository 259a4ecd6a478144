"""CLIP vision tower as the whole-image memory: the ViL model's image-level feature map of the
paper's Fig. 2a, which the region tokens cross-attend to (Fig. 2b). Whether the class token is
kept is the paper's Table 4a ablation.

The memory is every token of the last transformer layer, class token first when kept, taken
before ``post_layernorm`` and the projection. In Hugging Face's ``CLIPVisionModel`` that is
exactly ``last_hidden_state`` (the post-norm is only applied to the pooled class token).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, CLIPConfig, CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection

from regionspot.backbones.loading import BackboneLoadError, load_hf_pretrained, load_hf_pretrained_with_info
from regionspot.backbones.protocols import freeze
from regionspot.config import ClipBackboneConfig
from regionspot.ops.official_inputs import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def square_side(value: object, name: str) -> int:
    """A vision config's ``image_size``/``patch_size`` as one side: transformers also allows a
    pair, which CLIP's square input can only take when both sides are equal."""
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BackboneLoadError(f"CLIP vision config {name} = {value!r}: expected one positive integer (square)")
    return value


class ClipVisionMemory(torch.nn.Module):
    """Frozen CLIP vision tower giving ``[B, T, width]`` memory for the fusion module.

    ``T = (image_size // patch_size) ** 2 + (1 if use_class_token else 0)``.
    Build it with :meth:`from_pretrained` (Hub id or local folder) or :meth:`from_clip_model`
    (an in-memory ``CLIPModel``, for tests and benchmarks).
    """

    def __init__(
        self,
        vision_model: CLIPVisionModel,
        projection: torch.nn.Linear | None,
        *,
        image_size: int | None = None,
        use_class_token: bool = True,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        name: str = "<in-memory>",
    ) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.projection = projection
        vision_config = vision_model.config
        self.native_image_size = square_side(vision_config.image_size, "image_size")
        self.patch_size = square_side(vision_config.patch_size, "patch_size")
        self.width: int = int(vision_config.hidden_size)
        self.image_size: int = int(image_size) if image_size else self.native_image_size
        if self.image_size < self.patch_size:
            raise ValueError(f"image_size {self.image_size} is smaller than the patch size {self.patch_size}")
        self.use_class_token = use_class_token
        self.mean: tuple[float, ...] = tuple(float(v) for v in mean)
        self.std: tuple[float, ...] = tuple(float(v) for v in std)
        self.name = name
        freeze(self)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, image_size: int | None = None, use_class_token: bool = True
    ) -> ClipVisionMemory:
        """Load from a Hub id or a folder saved from ``CLIPModel``, ``CLIPVisionModel`` or
        ``CLIPVisionModelWithProjection``. Mean/std come from the folder's
        ``preprocessor_config.json`` when present, else OpenAI CLIP's."""
        vision_model, projection = _load_vision_tower(name_or_path)
        mean, std = read_preprocessor_mean_std(name_or_path)
        return cls(vision_model, projection, image_size=image_size, use_class_token=use_class_token,
                   mean=mean, std=std, name=name_or_path)

    @classmethod
    def from_clip_model(
        cls,
        model: CLIPModel,
        *,
        image_size: int | None = None,
        use_class_token: bool = True,
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        name: str = "<in-memory>",
    ) -> ClipVisionMemory:
        """Wrap the vision tower and visual projection of an in-memory ``CLIPModel`` (shared,
        not copied: the model's vision parameters become frozen)."""
        return cls(model.vision_model, model.visual_projection, image_size=image_size,
                   use_class_token=use_class_token, mean=mean, std=std, name=name)

    @property
    def num_tokens(self) -> int:
        """Memory length T at ``image_size``."""
        grid = self.image_size // self.patch_size
        return grid * grid + (1 if self.use_class_token else 0)

    @property
    def projection_dim(self) -> int | None:
        """Width of the pooled CLIP image embedding, None without a visual projection."""
        return None if self.projection is None else int(self.projection.out_features)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``HxWx3`` uint8 RGB -> ``[3, S, S]`` float32: the whole image (no crop) resized to
        ``S = image_size`` with PIL bicubic, scaled to [0, 1], normalised with mean/std."""
        return preprocess_image(image, self.image_size, self.mean, self.std)

    def _forward_tower(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the tower -> (last_hidden_state ``[B, 1+P, width]``, pooled ``[B, width]``)."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be [B, 3, S, S], got {tuple(pixel_values.shape)}")
        parameter = next(self.vision_model.parameters())
        pixels = pixel_values.to(device=parameter.device, dtype=parameter.dtype)
        height, width = pixels.shape[-2:]
        interpolate = (height, width) != (self.native_image_size, self.native_image_size)
        with torch.no_grad():
            output = self.vision_model(pixel_values=pixels, interpolate_pos_encoding=interpolate)
        return output.last_hidden_state, output.pooler_output

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> memory ``[B, T, width]`` float32 on the tower's device: the last
        layer's tokens before ``post_layernorm``/projection, class token first when kept."""
        hidden, _ = self._forward_tower(pixel_values)
        if not self.use_class_token:
            hidden = hidden[:, 1:]
        return hidden.float()

    def encode_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, projection_dim]`` float32 L2-normalised CLIP image
        embeddings (post-norm class token through the visual projection)."""
        if self.projection is None:
            raise RuntimeError(f"{self.name!r} has no visual projection (a bare CLIPVisionModel); "
                               "pooled CLIP embeddings need CLIPModel or CLIPVisionModelWithProjection weights")
        _, pooled = self._forward_tower(pixel_values)
        with torch.no_grad():
            embeddings = self.projection(pooled).float()
        return torch.nn.functional.normalize(embeddings, dim=-1)

    def describe(self) -> dict[str, object]:
        """What this tower is, for ``regionspot info`` and cache keys."""
        return {
            "kind": "clip_vision",
            "name": self.name,
            "width": self.width,
            "image_size": self.image_size,
            "native_image_size": self.native_image_size,
            "patch_size": self.patch_size,
            "layers": int(self.vision_model.config.num_hidden_layers),
            "num_tokens": self.num_tokens,
            "use_class_token": self.use_class_token,
            "projection_dim": self.projection_dim,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def preprocess_image(
    image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``HxWx3`` uint8 RGB -> ``[3, size, size]`` float32 (bicubic resize of the whole image,
    then ``(x / 255 - mean) / std`` per channel)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {shape} dtype {dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    resized = Image.fromarray(np.ascontiguousarray(image), mode="RGB").resize(
        (size, size), resample=Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous()


def read_preprocessor_mean_std(name_or_path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean``/``image_std`` of ``preprocessor_config.json`` in a folder or a cached Hub
    repository; OpenAI CLIP's values when the file or the fields are missing."""
    from regionspot.hub import is_local, offline_cause

    path = Path(name_or_path) / "preprocessor_config.json"
    file: str | None = str(path) if path.is_file() else None
    if file is None and not is_local(name_or_path):
        try:
            from transformers.utils import cached_file

            # offline or unreachable Hub: the cached copy or nothing, never a wait on the network
            file = cached_file(name_or_path, "preprocessor_config.json",
                               _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False,
                               local_files_only=offline_cause() is not None)
        except Exception:  # noqa: BLE001 - any failure means: use the defaults
            file = None
    if file is None:
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    data = json.loads(Path(file).read_text())
    mean = data.get("image_mean", OPENAI_CLIP_MEAN)
    std = data.get("image_std", OPENAI_CLIP_STD)
    if len(mean) != 3 or len(std) != 3:
        raise BackboneLoadError(f"{file}: image_mean/image_std must have 3 values, got {mean} / {std}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _load_vision_tower(name_or_path: str) -> tuple[CLIPVisionModel, torch.nn.Linear | None]:
    """The vision tower (and visual projection when the weights have one) of a CLIP folder/id.

    Refuses weights that leave any parameter of the kept modules uninitialised.
    """
    config = load_hf_pretrained(AutoConfig, name_or_path)
    model_type = getattr(config, "model_type", None)
    if model_type == "clip":
        model, info = load_hf_pretrained_with_info(CLIPModel, name_or_path)
        check_loading_info(name_or_path, info, prefixes=("vision_model.", "visual_projection."))
        return model.vision_model, model.visual_projection
    if model_type == "clip_vision_model":
        architectures = getattr(config, "architectures", None) or []
        if "CLIPVisionModelWithProjection" in architectures:
            projected, info = load_hf_pretrained_with_info(CLIPVisionModelWithProjection, name_or_path)
            check_loading_info(name_or_path, info, prefixes=("",))
            return projected.vision_model, projected.visual_projection
        vision, info = load_hf_pretrained_with_info(CLIPVisionModel, name_or_path)
        check_loading_info(name_or_path, info, prefixes=("",))
        return vision, None
    raise BackboneLoadError(f"{name_or_path!r} is a {model_type!r} model, not a CLIP model "
                            "(expected model_type 'clip' or 'clip_vision_model')")


def check_loading_info(name_or_path: str, info: dict[str, Any], prefixes: tuple[str, ...]) -> None:
    """Raise when weights of the kept modules were missing or mismatched in the checkpoint."""
    missing = [str(k) for k in info.get("missing_keys", ()) if str(k).startswith(prefixes)]
    mismatched = [str(k) for k in info.get("mismatched_keys", ())]
    if missing or mismatched:
        raise BackboneLoadError(f"{name_or_path!r}: incomplete CLIP weights; missing {sorted(missing)[:10]}, "
                                f"mismatched {sorted(mismatched)[:10]}")


def build_image_memory_encoder(config: ClipBackboneConfig) -> ClipVisionMemory | None:
    """The CLIP memory encoder described by ``config``; None for the "no CLIP vision" ablation."""
    if not config.enabled:
        return None
    return ClipVisionMemory.from_pretrained(config.name_or_path, image_size=config.image_size,
                                            use_class_token=config.use_class_token)


def _clip_config(vision: dict[str, int], text: dict[str, int], projection_dim: int) -> CLIPConfig:
    return CLIPConfig(text_config=dict(text), vision_config=dict(vision), projection_dim=projection_dim)


_OPENAI_TEXT: dict[str, int] = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                                    eos_token_id=49407, pad_token_id=1)


def clip_vit_b16_config() -> CLIPConfig:
    """The real OpenAI CLIP ViT-B/16 architecture (random weights when instantiated)."""
    return _clip_config(
        vision=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    patch_size=16, image_size=224, projection_dim=512),
        text=dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048,
                  projection_dim=512, **_OPENAI_TEXT),
        projection_dim=512,
    )


def clip_vit_l14_config(image_size: int = 224) -> CLIPConfig:
    """The real OpenAI CLIP ViT-L/14 architecture (``image_size=336`` for ViT-L/14@336)."""
    return _clip_config(
        vision=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    patch_size=14, image_size=image_size, projection_dim=768),
        text=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  projection_dim=768, **_OPENAI_TEXT),
        projection_dim=768,
    )


TINY_VOCAB_SIZE = 1024


def tiny_clip_config(
    *, image_size: int = 32, patch_size: int = 8, bos_token_id: int = TINY_VOCAB_SIZE - 2,
    eos_token_id: int = TINY_VOCAB_SIZE - 1,
) -> CLIPConfig:
    """A tiny CLIP for fast tests: vision 32 wide, 2 layers, patch 8 at 32 px (16 patches);
    text 32 wide, 2 layers, vocabulary 1024 (specials last, as in CLIP), 77 positions; projection 16."""
    return _clip_config(
        vision=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    patch_size=patch_size, image_size=image_size, projection_dim=16),
        text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  vocab_size=TINY_VOCAB_SIZE, max_position_embeddings=77, projection_dim=16,
                  bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id),
        projection_dim=16,
    )
