"""The README's first command, run as written, with the Hugging Face Hub replaced by a local cache
holding tiny models under the default backbones' ids (``facebook/sam-vit-base``,
``openai/clip-vit-base-patch16``), offline. It must write out.json and out.png and name the
zero-shot method that answered."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from PIL import Image

from regionspot.config import ClipBackboneConfig, SamBackboneConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_first_command() -> list[str]:
    """The ``regionspot`` part of the first line of the README's first bash block
    (``bash scripts/setup.sh && .venv/bin/regionspot ...``)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "the README has no bash block"
    lines = [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]
    setup, _, command = lines[0].partition(" && ")
    assert setup == "bash scripts/setup.sh", lines[0]
    words = shlex.split(command)
    assert words[0] == ".venv/bin/regionspot", words
    return words[1:]


def test_first_command_has_no_placeholder() -> None:
    words = readme_first_command()
    assert words[0] == "predict"
    for word in words:
        assert not re.fullmatch(r"[A-Z_]{3,}|.*\.\.\..*", word), f"placeholder {word!r} in the README's command"
    files = [word for word in words if "/" in word and not word.startswith("-")]
    assert files and all((REPO_ROOT / file).is_file() for file in files), files


def test_first_command_runs_as_written(tmp_path: Path, tiny_sam_dir: Path, tiny_clip_dir: Path,
                                       add_to_hub_cache) -> None:
    import shutil

    cache = tmp_path / "hub"
    add_to_hub_cache(cache, SamBackboneConfig.name_or_path, lambda folder: shutil.copytree(tiny_sam_dir, folder,
                                                                                              dirs_exist_ok=True))
    add_to_hub_cache(cache, ClipBackboneConfig.name_or_path, lambda folder: shutil.copytree(tiny_clip_dir, folder,
                                                                                               dirs_exist_ok=True))
    work = tmp_path / "work"
    work.mkdir()
    (work / "docs").symlink_to(REPO_ROOT / "docs")  # the command's relative paths, outputs in the temporary folder
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env = {**base, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "REGIONSPOT_CACHE": str(tmp_path / "rs"),
           "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "regionspot", *readme_first_command()], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((work / "out.json").read_text())
    assert document["model"]["method"] == "clip-mask-crop" and document["model"]["trained"] is False
    assert len(document["regions"]) == 4 and all(region["label"] in document["vocabulary"]
                                                 for region in document["regions"])
    assert Image.open(work / "out.png").size[0] == Image.open(REPO_ROOT / "docs/examples/kitchen.jpg").size[0]
    assert "zero-shot clip-mask-crop" in done.stderr
