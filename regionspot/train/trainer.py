"""The training loop, readable top to bottom (in the spirit of nanoGPT's).

One step: plan the global batch (a pure function of seed and step), build this process's share,
run the head, focal loss normalised by the global region count, backward, clip, AdamW, schedule.
Every ``checkpoint_every`` steps (and on Ctrl-C / SIGTERM, and at the end) rank 0 writes the
training state atomically; ``resume=True`` continues from the latest one exactly.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from regionspot.config import save_config, to_dict
from regionspot.datasets.mixture import rank_range
from regionspot.fileio import write_failure
from regionspot.model.regionspot import RegionSpot
from regionspot.prefetch import prefetched
from regionspot.processes import DistributedContext, all_reduce_sum
from regionspot.train.batches import DataSource, PreparedBatch, RegionBatch, StepPreparer, finish_batch
from regionspot.train.config import TrainConfig
from regionspot.train.curves import MetricsLog, plot_curves
from regionspot.train.errors import TrainingDivergedError
from regionspot.train.evaluate import evaluate_top1
from regionspot.train.loss import region_accuracy, sigmoid_focal_loss
from regionspot.train.schedule import build_optimizer, build_scheduler, clip_gradients
from regionspot.train.setup import build_sources, build_training_model, check_config
from regionspot.train.state import (
    capture_rng_state,
    latest_training_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
    state_filename,
)
from regionspot.weights import CheckpointError


class Trainer:
    """Holds the model, optimizer, data and logs of one run; ``run()`` trains to the end."""

    def __init__(self, config: TrainConfig, ctx: DistributedContext, *, resume: bool = False,
                 progress: bool = True) -> None:
        check_config(config, ctx.world_size)
        self.config, self.ctx, self.progress = config, ctx, progress and ctx.is_main
        self.output = Path(config.output_dir)
        torch.manual_seed(config.seed + ctx.rank)
        self.model: RegionSpot = build_training_model(config).to(ctx.device)
        self.sources: list[DataSource] = build_sources(config, config.datasets, self.model)
        self.eval_source = build_sources(config, [config.eval_dataset], self.model)[0] \
            if config.eval_dataset is not None else None
        self.head = self.model.fusion
        self.optimizer = build_optimizer(self.head.named_parameters(), config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim)
        self.step = 0
        self.log: MetricsLog | None = None
        if ctx.is_main:
            with self._writing(self.output / "metrics.csv"):
                self.log = MetricsLog(self.output / "metrics.csv", warn=print_warning)
        if resume:
            self._resume()
        self.trained = self._wrap_for_data_parallel()
        self._stop_requested = False  # set by SIGINT/SIGTERM, agreed on by all processes each step

    # ------------------------------------------------------------------ state
    def _resume(self) -> None:
        path = latest_training_state(self.output / "checkpoints")
        if path is None:
            if self.ctx.is_main:
                print(f"no training state in {self.output / 'checkpoints'}: starting from step 0")
            return
        state = load_training_state(path.parent)  # the latest readable state (falls back to older ones)
        self.model.load_head_state(state["head"], what=f"training state in {path.parent}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self._adopt_learning_rate()
        rng_states = state["rng"]
        if len(rng_states) != self.ctx.world_size and self.ctx.is_main:
            print(f"note: resuming {len(rng_states)}-process state on {self.ctx.world_size} processes: data order "
                  "is unchanged, dropout noise differs from an uninterrupted run")
        restore_rng_state(rng_states[min(self.ctx.rank, len(rng_states) - 1)])
        if self.log is not None:
            with self._writing(self.log.csv_path):
                self.log.truncate_after(self.step)
        if self.ctx.is_main:
            print(f"resumed from {path.parent} at step {self.step}")

    def _adopt_learning_rate(self) -> None:
        """``--resume --set optim.lr=...``: the restored optimizer and scheduler carry the saved
        run's base learning rate; the configured one replaces it (the usual remedy after a
        divergence). Unchanged when they agree, so an ordinary resume stays exact."""
        rate, saved = self.config.optim.lr, self.scheduler.base_lrs
        if all(base == rate for base in saved):
            return
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scheduler.base_lrs = [rate] * len(saved)
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["lr"] = rate, rate * factor
        if self.ctx.is_main:
            print(f"note: optim.lr {rate:g} replaces the saved run's {saved[0]:g} from step {self.step} on")

    def save(self) -> None:
        """Write the training state (rank 0 writes; every rank contributes its RNG state)."""
        rng_states = self._gather_rng_states()
        if not self.ctx.is_main:
            return
        state = {"step": self.step, "head": self.model.head_state(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_states, "config": to_dict(self.config)}
        path = self.output / "checkpoints" / state_filename(self.step)
        with self._writing(path):
            save_training_state(path, state)

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """An OSError while writing ``path`` (a full disk, a read-only folder) -> one
        CheckpointError naming it, why, and which saved state ``--resume`` continues from."""
        try:
            yield
        except OSError as exc:
            raise CheckpointError(f"{write_failure(path, exc)}; {self._kept()}") from None

    def _kept(self, how: str = ": continue with --resume") -> str:
        """What survives a failed write or a divergence, for error messages."""
        latest = latest_training_state(self.output / "checkpoints")
        if latest is None:
            return "no training state had been saved yet"
        return f"the last saved training state {latest} is kept{how}"

    def _gather_rng_states(self) -> list[Any]:
        state = capture_rng_state()
        if self.ctx.world_size == 1:
            return [state]
        gathered: list[Any] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def _wrap_for_data_parallel(self) -> torch.nn.Module:
        if self.ctx.world_size == 1:
            return self.head
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(self.head, device_ids=device_ids)

    # ------------------------------------------------------------------ one step
    def step_preparer(self) -> StepPreparer:
        """What prepares any step's batch without the model (picklable to DataLoader workers)."""
        config, encoder = self.config, self.model.image_encoder
        return StepPreparer(sources=self.sources, seed=config.seed, batch_size=config.batch_size,
                            ratios=[d.ratio for d in config.datasets], augment=config.augment,
                            max_regions=config.max_regions_per_image,
                            positions=rank_range(config.batch_size, self.ctx.rank, self.ctx.world_size),
                            preprocess=None if encoder is None else encoder.preprocess, uses_memory=encoder is not None)

    def batch_for(self, step: int, prepared: tuple[int, PreparedBatch] | None = None) -> tuple[int, RegionBatch]:
        """Step ``step``'s (dataset index, batch); ``prepared``: its preparation, done ahead."""
        dataset_index, batch = prepared if prepared is not None else self.step_preparer()(step)
        return dataset_index, finish_batch(batch, self.model.region_tokenizer, self.model.image_encoder,
                                           self.ctx.device)

    def train_step(self, step: int, prepared: tuple[int, PreparedBatch] | None = None) -> dict[str, float]:
        dataset_index, batch = self.batch_for(step, prepared)
        names = [self.sources[dataset_index].dataset.names[i] for i in batch.vocabulary]
        text = self.model.text_embeddings(names)
        total_regions = all_reduce_sum(torch.tensor(float(batch.num_regions), device=self.ctx.device), self.ctx)
        with self._autocast():
            embeddings, _ = self.trained(batch.tokens, batch.memory, batch.padding)
        valid = ~batch.padding
        logits = self.head.logits(embeddings[valid].float(), text)
        # DDP averages gradients over processes: scale so the result is the global mean per region
        normalizer = total_regions / self.ctx.world_size
        loss = sigmoid_focal_loss(logits, batch.targets[valid], self.config.loss.alpha, self.config.loss.gamma,
                                  normalizer=normalizer)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_gradients(self.head.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        correct, count = region_accuracy(logits.detach(), batch.targets[valid])
        summed = all_reduce_sum(torch.tensor([loss.item() / self.ctx.world_size, correct, count,
                                              float(self._stop_requested)],
                                             device=self.ctx.device, dtype=torch.float64), self.ctx)
        self._stop_requested = bool(summed[3] > 0)  # every process stops after the same step
        return {"loss": float(summed[0]), "accuracy": float(summed[1]) / max(float(summed[2]), 1.0),
                "lr": float(self.scheduler.get_last_lr()[0]), "grad_norm": float(grad_norm)}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.amp and self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Train to ``config.iterations``; returns the exported head's folder."""
        config = self.config
        if self.ctx.is_main:
            with self._writing(self.output / "config.yaml"):
                self.output.mkdir(parents=True, exist_ok=True)
                save_config(config, self.output / "config.yaml")
        self.head.train()
        bar = tqdm(total=config.iterations, initial=self.step, disable=not self.progress, desc="train",
                   dynamic_ncols=True)
        started = time.perf_counter()
        steps = list(range(self.step, config.iterations))
        ahead = prefetched(steps, self.step_preparer(), workers=config.num_workers,
                           pin_memory=self.ctx.device.type == "cuda")  # batches prepared by worker processes
        with self._stop_on_signals(), contextlib.closing(ahead):  # the workers stop with the loop, however it ends
            while self.step < config.iterations and not self._stop_requested:
                _, prepared = next(ahead)
                values = self.train_step(self.step, prepared)
                self.step += 1
                self._after_step(values, bar)
        bar.close()
        self.save()
        if self._stop_requested:
            raise KeyboardInterrupt(f"stopped at step {self.step}; resume with --resume")
        return self._finish(time.perf_counter() - started)

    def _after_step(self, values: dict[str, float], bar: tqdm) -> None:
        config, step = self.config, self.step
        if not math.isfinite(values["loss"]):
            raise self._diverged(values["loss"])
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}", acc=f"{values['accuracy']:.2f}")
        if self.log is not None and (step % config.log_every == 0 or step == config.iterations):
            with self._writing(self.log.csv_path):
                self.log.append(step, "train", values)
        if self.eval_source is not None and (step % config.eval_every == 0 or step == config.iterations):
            metrics = evaluate_top1(self.model, self.eval_source, self.ctx)
            self.head.train()
            if self.log is not None:
                with self._writing(self.log.csv_path):
                    self.log.append(step, "eval", metrics)
                bar.write(f"step {step}: eval " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if step % config.checkpoint_every == 0 and step < config.iterations:
            self.save()

    def _diverged(self, loss: float) -> TrainingDivergedError:
        """The error for a non-finite loss at the step just taken: nothing of it is saved."""
        rate = self.config.optim.lr
        return TrainingDivergedError(
            f"the loss is {loss} at step {self.step}: training diverged; "
            f"{self._kept(' (--resume continues from it)')}; lower the learning rate (optim.lr is {rate:g}, e.g. "
            f"--set optim.lr={rate / 10:g}) and check the data (boxes, images, token caches)")

    def _finish(self, seconds: float) -> Path:
        final = self.output / "final"
        if self.ctx.is_main:
            try:
                self.model.save_pretrained(final)
            except CheckpointError as exc:  # a full disk or a read-only folder: the last state is saved
                raise CheckpointError(f"{exc}; {self._kept()}") from None
            if self.log is not None:
                with self._writing(self.output / "curves.png"):
                    plot_curves(self.log.csv_path, self.output / "curves.png")
            print(f"trained {self.step} steps in {seconds:.0f} s; head exported to {final}")
        return final

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """Single process: Ctrl-C / SIGTERM finish the current step, save, and stop. Under
        torchrun the launcher's signals keep their default effect (a process blocked in a
        collective with a failed peer could not finish its step); there, as after SIGKILL, at
        most ``checkpoint_every`` steps are lost."""
        if self.ctx.world_size > 1:
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            self._stop_requested = True

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for sig in previous:
                signal.signal(sig, request_stop)
        except ValueError:  # not the main thread: leave signals alone
            previous = {}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def print_warning(message: str) -> None:
    """One ``warning: ...`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)
