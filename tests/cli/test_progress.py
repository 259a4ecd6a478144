"""``--no-progress`` switches off every bar for the command: ours, the CLIP text tower's, the
Hugging Face Hub's, and restores the previous state after."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub.utils import are_progress_bars_disabled

from regionspot.backbones.clip_text import ClipTextEmbedder, save_tiny_clip
from regionspot.cli.main import progress_bars


def test_no_progress_quiets_the_hub_and_tqdm_and_restores_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not are_progress_bars_disabled()
    with progress_bars(enabled=False):
        assert os.environ["TQDM_DISABLE"] == "1" and are_progress_bars_disabled()
    assert "TQDM_DISABLE" not in os.environ and not are_progress_bars_disabled()
    with progress_bars(enabled=True):
        assert "TQDM_DISABLE" not in os.environ and not are_progress_bars_disabled()


def test_the_clip_text_bar_follows_no_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A vocabulary large enough for a bar (over PROGRESS_MIN_PROMPTS prompts) shows one, unless
    the command runs with --no-progress (tqdm itself reads TQDM_DISABLE only when imported)."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    embedder = ClipTextEmbedder.from_pretrained(str(save_tiny_clip(tmp_path / "clip")), templates="ensemble",
                                                cache_dir=tmp_path / "text")
    embedder.encode_text([f"thing {i}" for i in range(8)])
    assert "CLIP text" in capsys.readouterr().err
    with progress_bars(enabled=False):
        embedder.encode_text([f"other thing {i}" for i in range(8)])
    assert "CLIP text" not in capsys.readouterr().err
