"""Choosing the text embedder from the configuration."""

from __future__ import annotations

from regionspot.backbones.protocols import TextEmbedder
from regionspot.config import TextConfig, check_limits


def build_text_embedder(config: TextConfig, clip_name_or_path: str) -> TextEmbedder:
    """The text embedder ``config`` describes.

    ``config.bank`` set: a :class:`~regionspot.backbones.text_bank.TextBankEmbedder` (its rows
    were made with their own prompt, so ``config.templates`` does not apply). Otherwise the CLIP
    text tower of ``config.name_or_path``, or of ``clip_name_or_path`` (the vision backbone's)
    when that is None, with ``config.templates`` and ``config.cache_dir``.
    """
    if config.bank:
        from regionspot.backbones.text_bank import TextBankEmbedder

        return TextBankEmbedder(config.bank)
    from regionspot.backbones.clip_text import ClipTextEmbedder

    check_limits(config, "text")
    return ClipTextEmbedder.from_pretrained(config.name_or_path or clip_name_or_path,
                                            templates=config.templates, cache_dir=config.cache_dir,
                                            memory_names=config.memory_names, disk_names=config.disk_names)
