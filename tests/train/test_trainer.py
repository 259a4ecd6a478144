"""Training end to end on the real COCO sample with real MobileSAM tokens and the real CLIP text
bank (the paper's "no CLIP vision" ablation, Table 6a; Table 4a in arXiv v1): learning, exact
resume after SIGKILL, 2-process DDP."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from regionspot.config import apply_overrides, load_config, save_config
from regionspot.model.regionspot import RegionSpot
from regionspot.processes import DistributedContext
from regionspot.train.config import TrainConfig
from regionspot.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny_coco_sample.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def coco_token_cache(mobile_sam_checkpoint: Path, coco_sample: Path, tmp_path_factory) -> Path:
    """MobileSAM tokens of every box of the 96 photos (no flip), made once per session."""
    from regionspot.backbones.sam import build_region_tokenizer
    from regionspot.cache.token_cache import extract_tokens
    from regionspot.config import SamBackboneConfig
    from regionspot.datasets.coco_format import CocoDataset

    out = tmp_path_factory.mktemp("tokens") / "coco-sample"
    dataset = CocoDataset(coco_sample / "annotations.json", coco_sample / "images", name="coco-sample")
    tokenizer = build_region_tokenizer(SamBackboneConfig(name_or_path=str(mobile_sam_checkpoint)))
    extract_tokens(dataset, tokenizer, out, flips=(False,), progress=False)
    return out


def tiny_config(tmp_path: Path, cache: Path, mobile_sam: Path, shared: Path, *overrides: str) -> TrainConfig:
    config = load_config(TrainConfig, TINY_CONFIG)
    sample = shared / "coco-sample"
    bank = shared / "text-banks" / "coco_clip-vit-b32_a-name.npy"
    return apply_overrides(config, [
        f"model.sam.name_or_path={mobile_sam}", f"model.text.bank={bank}",
        f"datasets.0.annotations={sample / 'annotations.json'}", f"datasets.0.images={sample / 'images'}",
        f"datasets.0.token_cache={cache}", f"eval_dataset.annotations={sample / 'annotations.json'}",
        f"eval_dataset.images={sample / 'images'}", f"eval_dataset.token_cache={cache}",
        f"output_dir={tmp_path / 'run'}", *overrides,
    ])


def single_process() -> DistributedContext:
    return DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)


def read_metrics(run: Path, split: str, name: str) -> list[tuple[int, float]]:
    with (run / "metrics.csv").open() as handle:
        return [(int(r["step"]), float(r["value"])) for r in csv.DictReader(handle)
                if r["split"] == split and r["name"] == name]


def test_tiny_config_memorises_the_coco_sample(tmp_path, coco_token_cache, mobile_sam_checkpoint, shared_data):
    config = tiny_config(tmp_path, coco_token_cache, mobile_sam_checkpoint, shared_data)
    final = Trainer(config, single_process(), progress=False).run()
    run = Path(config.output_dir)
    losses = [v for _, v in read_metrics(run, "train", "loss")]
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, "the training loss should fall"
    top1 = read_metrics(run, "eval", "top1")
    print("eval top-1 by step:", top1)
    assert top1[-1][1] >= 0.9
    assert (run / "curves.png").stat().st_size > 10_000 and (run / "config.yaml").is_file()
    model = RegionSpot.from_pretrained(final)  # the exported head loads like any checkpoint
    assert model.config.fusion.width == 256 and model.image_encoder is None


def _run_cli(config: TrainConfig, path: Path, *extra: str, nproc: int = 1) -> subprocess.Popen:
    save_config(config, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    launcher = [sys.executable, "-m", "regionspot"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "regionspot"]
    return subprocess.Popen([*launcher, "train", str(path), "--no-progress", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_resume_after_sigkill_gives_the_same_weights(finish_run, tmp_path, coco_token_cache, mobile_sam_checkpoint,
                                                     shared_data):
    common = ["iterations=120", "checkpoint_every=10", "eval_every=1000", "model.fusion.dropout=0.1"]
    whole = tiny_config(tmp_path / "whole", coco_token_cache, mobile_sam_checkpoint, shared_data, *common)
    broken = tiny_config(tmp_path / "broken", coco_token_cache, mobile_sam_checkpoint, shared_data, *common)
    finish_run(_run_cli(whole, tmp_path / "whole.yaml"))
    process = _run_cli(broken, tmp_path / "broken.yaml")
    latest = Path(broken.output_dir) / "checkpoints" / "latest.json"
    deadline = time.time() + 300
    while not latest.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert process.poll() is None, "the run ended before it could be killed: " + (process.stdout.read() or "")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    output = finish_run(_run_cli(broken, tmp_path / "broken.yaml", "--resume"))
    assert "resumed from" in output
    a = load_file(str(Path(whole.output_dir) / "final" / "model.safetensors"))
    b = load_file(str(Path(broken.output_dir) / "final" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")
    steps = [s for s, _ in read_metrics(Path(broken.output_dir), "train", "loss")]
    assert steps == sorted(set(steps)), "rows logged after the last checkpoint must not be duplicated"


def test_two_process_gloo_ddp_matches_one_process(finish_run, tmp_path, coco_token_cache, mobile_sam_checkpoint,
                                                  shared_data):
    common = ["iterations=30", "eval_every=30", "checkpoint_every=100", "log_every=1"]
    one = tiny_config(tmp_path / "one", coco_token_cache, mobile_sam_checkpoint, shared_data, *common)
    two = tiny_config(tmp_path / "two", coco_token_cache, mobile_sam_checkpoint, shared_data, *common)
    for config, nproc in ((one, 1), (two, 2)):
        finish_run(_run_cli(config, tmp_path / f"{nproc}.yaml", nproc=nproc))
    curve_one = read_metrics(Path(one.output_dir), "train", "loss")
    curve_two = read_metrics(Path(two.output_dir), "train", "loss")
    assert [s for s, _ in curve_one] == [s for s, _ in curve_two] and len(curve_one) == 30
    for (step, a), (_, b) in zip(curve_one, curve_two, strict=True):
        assert abs(a - b) <= 1e-3 * max(1.0, abs(a)), f"step {step}: 1 process {a}, 2 processes {b}"
    top1_one = read_metrics(Path(one.output_dir), "eval", "top1")[-1][1]
    top1_two = read_metrics(Path(two.output_dir), "eval", "top1")[-1][1]
    assert abs(top1_one - top1_two) < 0.01
