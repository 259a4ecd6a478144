"""The one table of named models: RegionSpot-BB and -BL (the paper's experiments) and -BL@336
(the authors' release, "RegionSpot-BL@336px").

Each entry holds what the rest of the package needs to know about one released model: its
names, the frozen backbones (Hugging Face Hub ids), the head's widths, CLIP's input size and
patch, the authors' ``MODEL.CLIP_TYPE`` and the trainable parameter count the paper reports.
``regionspot info`` prints it, ``convert-official`` and the loader convert the authors' files
by it, the configuration's default backbones are BB's, and a test checks the README's model-zoo
table against it.

This module is at the bottom layer (``regionspot.config`` imports it): it imports nothing of
the package, nor torch.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Width of SAM ViT-B's mask-decoder tokens, the head's input (the same for every model).
SAM_TOKEN_DIM = 256
#: SAM is ViT-B in all three released models.
SAM_VIT_BASE = "facebook/sam-vit-base"


@dataclass(frozen=True)
class NamedModel:
    """One released model.

    ``name``: the paper's (``BB``); ``variant``: the lower-case id of ``--variant`` and file names
    (``bb``); ``sam`` / ``clip``: the frozen backbones' Hub ids; ``clip_arch``: OpenAI's name of the
    CLIP tower; ``width`` / ``text_dim``: CLIP's vision width (the head's width) and text width;
    ``image_size`` / ``patch_size``: CLIP's input and patch size; ``their_clip_type``: the
    authors' ``MODEL.CLIP_TYPE``; ``paper_trainable_millions``: the head size the paper reports.
    """

    name: str
    variant: str
    sam: str
    clip: str
    clip_arch: str
    width: int
    text_dim: int
    image_size: int
    patch_size: int
    their_clip_type: str
    paper_trainable_millions: int
    token_dim: int = SAM_TOKEN_DIM

    @property
    def memory_tokens(self) -> int:
        """CLIP tokens per image (patches + class token): the length of their positional embedding."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every name this model answers to (compared without case): ``BB``, ``bb``, ``RegionSpot-BB``."""
        return self.name, self.variant, f"RegionSpot-{self.name}"


# BL@336 has BL's head; only CLIP's input size (and so its number of tokens) differs.
MODELS: tuple[NamedModel, ...] = (
    NamedModel("BB", "bb", SAM_VIT_BASE, "openai/clip-vit-base-patch16", "ViT-B/16", 768, 512, 224, 16,
               "CLIP_400M", 24),
    NamedModel("BL", "bl", SAM_VIT_BASE, "openai/clip-vit-large-patch14", "ViT-L/14", 1024, 768, 224, 14,
               "CLIP_400M_Large", 39),
    NamedModel("BL@336", "bl336", SAM_VIT_BASE, "openai/clip-vit-large-patch14-336", "ViT-L/14@336px", 1024, 768,
               336, 14, "CLIP_400M_Large_336", 39),
)
#: The models by variant id, in the table's order.
BY_VARIANT: dict[str, NamedModel] = {model.variant: model for model in MODELS}
#: The variant ids (``--variant`` choices).
VARIANTS: tuple[str, ...] = tuple(BY_VARIANT)
#: The default backbones of a configuration: BB's.
DEFAULT_SAM = BY_VARIANT["bb"].sam
DEFAULT_CLIP = BY_VARIANT["bb"].clip


def named_model(name: str) -> NamedModel:
    """The model one of whose :attr:`~NamedModel.aliases` is ``name`` (case ignored); ValueError
    naming the known ones otherwise."""
    wanted = name.strip().casefold()
    for model in MODELS:
        if wanted in (alias.casefold() for alias in model.aliases):
            return model
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(model.name for model in MODELS)} "
                   f"(or {', '.join(VARIANTS)})")
