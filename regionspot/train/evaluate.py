"""Evaluation during training: region top-1 accuracy (and focal loss) with ground-truth boxes
over a held-out dataset's whole vocabulary. The AP evaluator of the evaluation issue replaces
this when it lands."""

from __future__ import annotations

import torch

from regionspot.model.regionspot import RegionSpot
from regionspot.processes import DistributedContext, all_reduce_sum
from regionspot.train.batches import DataSource, build_batch
from regionspot.train.loss import region_accuracy, sigmoid_focal_loss


@torch.no_grad()
def evaluate_top1(model: RegionSpot, source: DataSource, ctx: DistributedContext, *, max_regions: int = 1_000_000,
                  images_per_batch: int = 8) -> dict[str, float]:
    """``{"top1": accuracy, "loss": mean focal loss per region}`` over every image of ``source``
    (un-augmented, images split across processes; the same numbers for any number of them)."""
    model.fusion.eval()
    everything = DataSource(source.dataset, None, source.token_cache, source.memory_cache)
    mine = list(range(ctx.rank, len(source.dataset), ctx.world_size))
    text = model.text_embeddings(source.dataset.names)
    totals = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(mine), images_per_batch):
        chunk = mine[start:start + images_per_batch]
        batch = build_batch(everything, chunk, range(len(chunk)), seed=0, step=0, augment=None,
                            tokenizer=model.region_tokenizer, image_encoder=model.image_encoder,
                            max_regions=max_regions, device=ctx.device)
        embeddings, _ = model.fusion(batch.tokens, batch.memory, batch.padding)
        valid = ~batch.padding
        logits = model.fusion.logits(embeddings[valid].float(), text)
        targets = torch.as_tensor(batch.vocabulary, device=logits.device)[batch.targets[valid]]
        loss = sigmoid_focal_loss(logits, targets, normalizer=1.0)
        correct, count = region_accuracy(logits, targets)
        totals += torch.tensor([correct, count, float(loss)], dtype=torch.float64)
    totals = all_reduce_sum(totals.to(ctx.device), ctx).cpu()
    regions = max(float(totals[1]), 1.0)
    return {"top1": float(totals[0]) / regions, "loss": float(totals[2]) / regions}
