"""A backbone is one adapter file: third-party-style adapters written only against the documented
Protocols (not subclasses of the project's classes; here they wrap the tiny test backbones) work
through predict, propose, eval and the crop baselines, and one lacking a capability fails once,
where the feature is first used, with an error naming its class and the missing member."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch

from regionspot.backbones.clip_vision import ClipVisionMemory
from regionspot.backbones.protocols import (
    CROP_CLIP,
    PREDICT_SAM,
    PREDICT_TEXT,
    REGIONSPOT_CLIP,
    BackboneCapabilityError,
    Capability,
    ImageMemoryEncoder,
    PointPromptable,
    PooledImageEncoder,
    RegionTokenizer,
    RegionTokens,
    SamImageEmbedding,
    TextEmbedder,
    protocol_members,
)
from regionspot.backbones.sam_tokenizer import SamRegionTokenizer
from regionspot.config import ConfigError, TextConfig, ZeroShotConfig
from regionspot.eval.jobs import BoxSource, ImageJob
from regionspot.eval.methods import build_classifier
from regionspot.model.regionspot import RegionSpot
from regionspot.model.zero_shot import ZeroShotCLIP
from regionspot.predictor import RegionPredictor
from regionspot.proposals.auto import (
    PROPOSE_SAM,
    AutoProposalConfig,
    ProposalBackboneError,
)

VOCAB = ["cat", "dog", "car", "tree"]
BOXES = np.array([[8.0, 10.0, 55.0, 45.0], [55.0, 35.0, 115.0, 85.0], [92.0, 5.0, 125.0, 35.0]])
#: keep every non-empty mask of a 4 x 4 grid: a random tiny SAM predicts low IoU
LAX = AutoProposalConfig(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_box_side=0.0)


# --- the adapters: what another library's SAM / CLIP would need to be wrapped in ----------------
class BoxOnlySam:
    """A SAM adapter for ``predict`` only (a :class:`RegionTokenizer`, no point prompts)."""

    def __init__(self, sam: Any) -> None:
        self._sam = sam
        self.token_dim: int = sam.token_dim
        self.image_input_size: int = sam.image_input_size

    def encode_image(self, image: np.ndarray) -> SamImageEmbedding:
        return self._sam.encode_image(image)

    def encode_regions(self, embedding: SamImageEmbedding, boxes: torch.Tensor,
                       with_masks: bool = True) -> RegionTokens:
        return self._sam.encode_regions(embedding, boxes, with_masks=with_masks)

    def paste_masks(self, embedding: SamImageEmbedding, mask_logits: torch.Tensor) -> torch.Tensor:
        return self._sam.paste_masks(embedding, mask_logits)

    def describe(self) -> dict[str, object]:
        return {"family": "third-party SAM"}


class PointSam(BoxOnlySam):
    """A SAM adapter for ``predict`` and ``propose`` (also :class:`PointPromptable`)."""

    def encode_points(self, embedding: SamImageEmbedding, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sam.encode_points(embedding, points)


class MemoryOnlyClip:
    """A CLIP vision adapter for a RegionSpot head only (an :class:`ImageMemoryEncoder`)."""

    def __init__(self, clip: Any) -> None:
        self._clip = clip
        self.width: int = clip.width
        self.image_size: int = clip.image_size

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self._clip.preprocess(image)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._clip.encode_image(pixel_values)

    def describe(self) -> dict[str, object]:
        return {"family": "third-party CLIP"}


class ThirdPartyClip(MemoryOnlyClip):
    """A CLIP vision adapter for a RegionSpot head and the crop baselines (also a
    :class:`PooledImageEncoder`)."""

    def __init__(self, clip: Any) -> None:
        super().__init__(clip)
        self.projection_dim: int | None = clip.projection_dim
        self.mean: tuple[float, ...] = tuple(clip.mean)

    def encode_pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._clip.encode_pooled(pixel_values)


class ThirdPartyText:
    """A text adapter."""

    def __init__(self, text: Any) -> None:
        self._text = text
        self.embed_dim: int = text.embed_dim

    def encode_text(self, names: Sequence[str]) -> torch.Tensor:
        return self._text.encode_text(names)

    def describe(self) -> dict[str, object]:
        return {"family": "third-party text"}


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built_in(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path) -> RegionSpot:
    """RegionSpot on the project's own tiny backbones (the reference)."""
    torch.manual_seed(0)
    return RegionSpot.from_backbones(sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                                     text=TextConfig(cache_dir=str(text_cache_dir)))


@pytest.fixture(scope="module")
def adapted(built_in: RegionSpot) -> RegionSpot:
    """The same head on third-party-style adapters around the same backbones."""
    return RegionSpot(built_in.config, PointSam(built_in.region_tokenizer), ThirdPartyClip(built_in.image_encoder),
                      ThirdPartyText(built_in.text_embedder), fusion=built_in.fusion)


def _same_result(ours: Any, theirs: Any) -> None:
    np.testing.assert_array_equal(ours.topk_ids, theirs.topk_ids)
    np.testing.assert_allclose(ours.topk_scores, theirs.topk_scores, atol=1e-6)
    np.testing.assert_array_equal(ours.masks, theirs.masks)


def _predict_and_propose(model: RegionSpot | ZeroShotCLIP, image: np.ndarray) -> tuple[Any, Any]:
    predictor = model.predictor()
    predictor.set_image(image)
    proposals = predictor.propose(LAX)
    return proposals, predictor.predict(np.concatenate([BOXES, proposals.boxes[:5]]), VOCAB, topk=len(VOCAB))


# --- the documented protocols hold ------------------------------------------------------------
def test_the_built_in_backbones_meet_the_documented_protocols(built_in: RegionSpot) -> None:
    sam, clip, text = built_in.region_tokenizer, built_in.image_encoder, built_in.text_embedder
    assert isinstance(sam, SamRegionTokenizer) and isinstance(clip, ClipVisionMemory)
    assert PREDICT_SAM.provided_by(sam) and PROPOSE_SAM.provided_by(sam) and PREDICT_TEXT.provided_by(text)
    assert REGIONSPOT_CLIP.provided_by(clip) and CROP_CLIP.provided_by(clip)
    for backbone, protocols in ((sam, (RegionTokenizer, PointPromptable)), (clip, (ImageMemoryEncoder,
                                                                                     PooledImageEncoder)),
                                (text, (TextEmbedder,))):
        assert all(isinstance(backbone, protocol) for protocol in protocols)


def test_protocol_members_are_shown_as_called() -> None:
    assert protocol_members(PointPromptable) == {"image_input_size": "image_input_size",
                                                 "encode_points": "encode_points(embedding, points)"}
    assert list(protocol_members(PooledImageEncoder)) == ["projection_dim", "mean", "preprocess", "encode_pooled",
                                                          "describe"]
    assert protocol_members(RegionTokenizer)["encode_regions"] == "encode_regions(embedding, boxes, with_masks)"


# --- adapters written to the protocols work everywhere --------------------------------------------
def test_an_adapted_regionspot_head_predicts_and_proposes_like_the_built_in_one(
        built_in: RegionSpot, adapted: RegionSpot, synthetic_scene: np.ndarray) -> None:
    expected_proposals, expected = _predict_and_propose(built_in, synthetic_scene)
    proposals, result = _predict_and_propose(adapted, synthetic_scene)
    assert len(expected_proposals) > 0
    np.testing.assert_array_equal(proposals.boxes, expected_proposals.boxes)
    _same_result(result, expected)
    assert adapted.describe()["backbones"]["sam"] == {"family": "third-party SAM"}


@pytest.mark.parametrize("method", ["clip-crop", "clip-mask-crop"])
def test_adapters_drive_the_zero_shot_crop_recognizer(method: Literal["clip-crop", "clip-mask-crop"],
                                                      built_in: RegionSpot, adapted: RegionSpot,
                                                      synthetic_scene: np.ndarray) -> None:
    config = ZeroShotConfig(method=method)
    zero_shot = ZeroShotCLIP(config, adapted.region_tokenizer, adapted.image_encoder, adapted.text_embedder)
    reference = ZeroShotCLIP(config, built_in.region_tokenizer, built_in.image_encoder, built_in.text_embedder)
    expected_proposals, expected = _predict_and_propose(reference, synthetic_scene)
    proposals, result = _predict_and_propose(zero_shot, synthetic_scene)
    np.testing.assert_array_equal(proposals.boxes, expected_proposals.boxes)
    _same_result(result, expected)
    np.testing.assert_allclose(result.topk_scores.sum(axis=1), 1.0, atol=1e-5)  # softmax over the vocabulary
    assert zero_shot.describe()["backbones"]["clip_vision"] == {"family": "third-party CLIP"}


def test_adapters_run_through_eval(built_in: RegionSpot, adapted: RegionSpot, synthetic_scene: np.ndarray) -> None:
    height, width = synthetic_scene.shape[:2]
    job = ImageJob(image_id=1, file_name="scene.png", path=Path("scene.png"), height=height, width=width)
    boxes = {}
    for name, model in (("ours", adapted), ("reference", built_in)):
        boxes[name], scores, embedding = BoxSource("auto", [job], auto_config=LAX,
                                                   tokenizer=model.region_tokenizer).boxes(job, synthetic_scene)
        assert embedding is not None and scores is not None and len(scores) == len(boxes[name]) > 0
    np.testing.assert_array_equal(boxes["ours"], boxes["reference"])
    for method in ("regionspot", "clip-mask-crop"):
        ours, theirs = (build_classifier(method, model).classify(synthetic_scene, BOXES, VOCAB, topk=2, with_masks=True)
                        for model in (adapted, built_in))
        _same_result(ours, theirs)


# --- a missing capability fails once, clearly -------------------------------------------------
def test_an_adapter_without_point_prompts_predicts_but_cannot_propose(
        built_in: RegionSpot, synthetic_scene: np.ndarray) -> None:
    model = RegionSpot(built_in.config, BoxOnlySam(built_in.region_tokenizer), built_in.image_encoder,
                       built_in.text_embedder, fusion=built_in.fusion)
    predictor = model.predictor()
    predictor.set_image(synthetic_scene)
    assert len(predictor.predict(BOXES, VOCAB, topk=1)) == len(BOXES)
    message = (r"^propose needs a SAM adapter with encode_points\(embedding, points\); BoxOnlySam does not have "
               r"it: use a SAM-family backbone, or pass boxes$")
    with pytest.raises(ProposalBackboneError, match=message) as info:
        predictor.propose()
    assert isinstance(info.value, ConfigError) and isinstance(info.value, TypeError)
    job = ImageJob(image_id=1, file_name="scene.png", path=Path("scene.png"), height=96, width=128)
    with pytest.raises(ProposalBackboneError, match=message):  # eval's --boxes auto says the same
        BoxSource("auto", [job], auto_config=LAX, tokenizer=model.region_tokenizer).boxes(job, synthetic_scene)


def test_each_capability_is_checked_once(adapted: RegionSpot, synthetic_scene: np.ndarray,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    original = Capability.missing

    def counting(self: Capability[Any], backbone: object) -> list[str]:
        checked.append(f"{self.feature}/{self.side}")
        return original(self, backbone)

    monkeypatch.setattr(Capability, "missing", counting)
    predictor = RegionPredictor(adapted)
    predictor.set_image(synthetic_scene)
    for _ in range(2):
        predictor.predict(BOXES, VOCAB)
        predictor.propose(LAX)
    predictor.set_image(synthetic_scene[:64])
    predictor.propose(LAX)
    assert sorted(checked) == ["predict/SAM", "predict/text", "propose/SAM"]


def test_a_missing_member_is_named_with_the_adapter_class(built_in: RegionSpot, adapted: RegionSpot,
                                                          synthetic_scene: np.ndarray) -> None:
    with pytest.raises(BackboneCapabilityError, match=r"^the zero-shot recognizer \(clip-crop, clip-mask-crop\) "
                       r"needs a CLIP vision adapter with projection_dim, mean, encode_pooled\(pixel_values\); "
                       r"MemoryOnlyClip does not have them$"):
        ZeroShotCLIP(ZeroShotConfig(), adapted.region_tokenizer, MemoryOnlyClip(built_in.image_encoder),
                     adapted.text_embedder)

    class NoMasks(BoxOnlySam):
        paste_masks = None  # type: ignore[assignment]

    sam = NoMasks(built_in.region_tokenizer)
    model = RegionSpot(built_in.config, sam, adapted.image_encoder, adapted.text_embedder,  # type: ignore[arg-type]
                       fusion=built_in.fusion)
    predictor = model.predictor()
    predictor.set_image(synthetic_scene)
    with pytest.raises(BackboneCapabilityError, match=r"^predict needs a SAM adapter with paste_masks\(embedding, "
                       r"mask_logits\); NoMasks does not have it$"):
        predictor.predict(BOXES, VOCAB)
