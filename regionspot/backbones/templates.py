"""Prompt templates for CLIP text embeddings, and category-name cleaning.

``SINGLE`` is the paper's prompt; ``ENSEMBLE`` adds the 80 ImageNet prompt templates that OpenAI
published with CLIP (the "Prompt Engineering for ImageNet" notebook of the CLIP repository, MIT
licence), 81 in all. A category's embedding is the normalised mean of its prompts' normalised
embeddings (see :mod:`regionspot.backbones.clip_text`). ``OFFICIAL`` is the authors' set, used
the authors' way (raw names, raw embeddings averaged, then normalised) for converted heads.
"""

from __future__ import annotations

from collections.abc import Sequence

from regionspot.vocab import clean_category_name

SINGLE: tuple[str, ...] = ("a photo of a {} in the scene",)

OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

ENSEMBLE: tuple[str, ...] = SINGLE + OPENAI_IMAGENET_TEMPLATES

#: The authors' release: ``'{}.'`` followed by the same 80 OpenAI templates (their
#: ``prompt_engineering.get_prompt_templates``, inherited from X-Decoder), 81 in all.
OFFICIAL: tuple[str, ...] = ("{}.", *OPENAI_IMAGENET_TEMPLATES)

TEMPLATES_BY_NAME: dict[str, tuple[str, ...]] = {"single": SINGLE, "ensemble": ENSEMBLE, "official": OFFICIAL}

#: The only rewriting of a name in the authors' text embeddings: dataset bookkeeping suffixes
#: dropped; underscores and parentheses (LVIS ``aerosol_can``, ``bow_(weapon)``) are kept.
OFFICIAL_DROPPED_SUFFIXES = ("-other", "-merged", "-stuff")


def official_name(name: str) -> str:
    """``name`` as the authors' text embeddings spell it (:data:`OFFICIAL_DROPPED_SUFFIXES` removed)."""
    for suffix in OFFICIAL_DROPPED_SUFFIXES:
        name = name.replace(suffix, "")
    return name


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """``"single"`` / ``"ensemble"`` / ``"official"`` or an explicit sequence of ``{}`` templates -> a tuple.

    Raises ``ValueError`` for an unknown set name, an empty sequence, or a template without
    exactly one ``{}``.
    """
    if isinstance(templates, str):
        if templates not in TEMPLATES_BY_NAME:
            raise ValueError(f"unknown template set {templates!r}; known: {sorted(TEMPLATES_BY_NAME)}")
        return TEMPLATES_BY_NAME[templates]
    resolved = tuple(templates)
    if not resolved:
        raise ValueError("at least one prompt template is needed")
    for template in resolved:
        if template.count("{}") != 1:
            raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}'")
    return resolved


def build_prompts(name: str, templates: Sequence[str], *, clean: bool = True) -> list[str]:
    """One prompt per template for category ``name`` (cleaned first unless ``clean=False``)."""
    filled = clean_category_name(name) if clean else name
    return [template.format(filled) for template in templates]
