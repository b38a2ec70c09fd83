"""The training loop every medgen training node uses.

`train(model, loss_fn, train_data, config)` runs ``config.max_steps`` AdamW steps of
``loss_fn(model, batch) -> scalar`` over ``train_data``, with warmup+cosine lr,
gradient accumulation and clipping, optional EMA / autocast / torch.compile,
periodic validation with early stopping, atomic checkpoints and exact resume. It
is DDP-aware: inside a worker started by `medgen.training.distributed.launch` it
wraps the model in DistributedDataParallel and shards the data; rank 0 alone
logs, shows progress and writes checkpoints.

Order of work inside one optimizer step (resume relies on it): ``accum_steps``
micro-batches forward/backward -> non-finite check -> clip -> optimizer ->
scheduler -> EMA -> ``on_step_end`` -> log -> validation / early stopping ->
checkpoints. A checkpoint therefore captures the state after *all* work of its
step, including RNG draws made by ``val_fn``.

Size: one class, `Trainer`, whose step order, checkpoint state and restore must be read
together (exact resume depends on all three agreeing); its set-up lives in `setup.py`.
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medgen.runtime import flush_denormals
from medgen.training import ranks
from medgen.training.augmentation import training_data
from medgen.training.callbacks import Callback, ProgressBar
from medgen.training.checkpoint import (
    BEST,
    LATEST,
    capture_rng_state,
    kept_name,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from medgen.training.config import TrainingConfig
from medgen.training.ema import create_ema
from medgen.training.errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingError
from medgen.training.results import LossFn, TrainingResult, ValFn
from medgen.training.sampling import ResumableSampler, move_to_device
from medgen.training.schedule import build_warmup_cosine_scheduler
from medgen.training.setup import autocast_dtype, build_optimizer, resolve_device

CHECKPOINT_FORMAT = 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class Trainer:
    """One training run; `train` is the usual entry. Callbacks see this object."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: Dataset,
        config: TrainingConfig,
        *,
        val_fn: ValFn | None = None,
        checkpoint_dir: str | Path | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        if not isinstance(config, TrainingConfig):
            raise ConfigError(
                f"config must be a TrainingConfig, got {type(config).__name__}; "
                "use TrainingConfig.from_dict(params)"
            )
        if config.early_stopping_metric is not None and val_fn is None:
            raise ConfigError("early_stopping_metric is set but no val_fn was given")
        flush_denormals()  # every worker process, not only the Kedro one (runtime.py says why)
        self.config = config
        self.loss_fn = loss_fn
        self.val_fn = val_fn
        self.rank, self.world_size = ranks.get_rank(), ranks.get_world_size()
        self.is_main = self.rank == 0
        self.device = resolve_device(config.device, ranks.get_local_rank())
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.callbacks = list(callbacks) if self.is_main else []
        if config.progress and self.is_main:
            self.callbacks.insert(0, ProgressBar())

        self.model = model.to(self.device)
        self.ema = create_ema(self.model, config.ema_decay) if config.ema_decay else None
        self.ddp = None
        forward_model: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            forward_model = self.ddp
        self.forward_model = torch.compile(forward_model) if config.compile else forward_model

        self.optimizer = build_optimizer(self.model, config, config.lr)
        self.scheduler = build_warmup_cosine_scheduler(
            self.optimizer, config.warmup_steps, config.max_steps, config.min_lr_ratio
        )
        self.autocast_dtype = autocast_dtype(config, self.device)
        # Loss scaling only matters for fp16 (bf16 has fp32's exponent range); a
        # disabled scaler is a pass-through whose (empty) state is still checkpointed.
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.autocast_dtype == torch.float16
        )

        # augmentation or overfit_batches' fixed items (always in order: the same batches)
        train_data = self.train_data = training_data(train_data, config, self.world_size)
        self.sampler = ResumableSampler(
            train_data,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=config.shuffle and config.overfit_batches is None,
            seed=config.seed,
            drop_last=config.drop_last,
        )
        per_rank = self.sampler.num_samples
        self.batches_per_epoch = (
            per_rank // config.batch_size
            if config.drop_last
            else math.ceil(per_rank / config.batch_size)
        )
        if self.batches_per_epoch == 0:
            raise ConfigError(
                f"batch_size={config.batch_size} is larger than the {per_rank} "
                f"samples each of the {self.world_size} rank(s) gets per epoch"
            )
        # Worker seeds are drawn from this generator when an iterator starts; without
        # it they come from the global RNG, whose stream would then depend on where
        # a run was resumed. Re-seeded per epoch so a resumed epoch gets the same ones.
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(
            train_data,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            drop_last=config.drop_last,
            generator=self.loader_generator,
            pin_memory=self.device.type == "cuda",
        )

        self.step = 0
        self.micro_batches = 0  # consumed by this rank; fixes the data position
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.bad_validations = 0
        self.stopped_early = False
        self.last_loss: float | None = None
        self._window = [0.0, 0]  # loss sum / steps since the last step record
        self._epoch_window = [0.0, 0]
        self.latest_checkpoint: Path | None = None
        self.best_checkpoint: Path | None = None
        # the last step's gradient norm before clipping (a device tensor: read it lazily);
        # without clipping it is computed only when a diagnostic asks (track_grad_norm)
        self.grad_norm: torch.Tensor | None = None
        self.track_grad_norm = False

    # ------------------------------------------------------------------ data
    @property
    def epoch(self) -> float:
        """Epochs done, fractional (micro-batches consumed / batches per epoch)."""
        return self.micro_batches / self.batches_per_epoch

    def _batches(self) -> Iterator[Any]:
        while True:
            epoch, offset = divmod(self.micro_batches, self.batches_per_epoch)
            self.sampler.set_position(epoch, offset * self.config.batch_size)
            self.loader_generator.manual_seed(self.config.seed + epoch)
            yield from self.loader

    # ------------------------------------------------------------------ step
    def train_step(self, micro_batches: Sequence[Any]) -> float:
        """One optimizer step over ``micro_batches``; returns the mean loss (all ranks)."""
        n = len(micro_batches)
        total = torch.zeros((), device=self.device)
        non_blocking = self.device.type == "cuda"
        for i, batch in enumerate(micro_batches):
            batch = move_to_device(batch, self.device, non_blocking)
            # Gradients are all-reduced once, on the last micro-batch.
            sync = self.ddp is None or i == n - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with torch.autocast(
                    self.device.type,
                    dtype=self.autocast_dtype,
                    enabled=self.autocast_dtype is not None,
                ):
                    loss = self.loss_fn(self.forward_model, batch)
                self.scaler.scale(loss / n).backward()
            total += loss.detach().float()
        mean = total / n
        if self.ddp is not None:  # every rank must agree on the value (and on NaN)
            torch.distributed.all_reduce(mean, op=torch.distributed.ReduceOp.AVG)
        loss_value = mean.item()
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(self.step + 1, loss_value, self.latest_checkpoint)
        if self.config.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            self.grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.max_grad_norm
            )
        elif self.track_grad_norm:
            self.scaler.unscale_(self.optimizer)
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            self.grad_norm = torch.nn.utils.get_total_norm(grads)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        self.micro_batches += n
        self.last_loss = loss_value
        return loss_value

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = True) -> TrainingResult:
        cfg = self.config
        if resume and self.checkpoint_dir is not None and (self.checkpoint_dir / LATEST).is_file():
            self.load(self.checkpoint_dir / LATEST)
        else:
            seed_everything(cfg.seed + self.rank)
        self.model.train()
        self._emit("on_train_start", self)
        batches = self._batches()
        while self.step < cfg.max_steps and not self.stopped_early:
            lr = self.optimizer.param_groups[0]["lr"]  # the lr this step will use
            loss = self.train_step([next(batches) for _ in range(cfg.accum_steps)])
            self._track(loss)
            self._emit("on_step_end", self)
            last = self.step == cfg.max_steps
            if self.step % cfg.log_every == 0 or last:
                self._log_window(lr)
            due = cfg.val_every is not None and (self.step % cfg.val_every == 0 or last)
            if due and self.val_fn is not None:
                self.validate()
            self._periodic_checkpoints(final=last or self.stopped_early)
        result = self.result()
        self._emit("on_train_end", self, result)
        return result

    def _track(self, loss: float) -> None:
        self._window[0] += loss
        self._window[1] += 1
        self._epoch_window[0] += loss
        self._epoch_window[1] += 1
        # A step that finishes an epoch closes that epoch's record (accumulated
        # micro-batches may straddle the boundary; the step counts for the new one).
        finished = self.micro_batches // self.batches_per_epoch
        previous = (self.micro_batches - self.config.accum_steps) // self.batches_per_epoch
        if finished > previous:
            record = {
                "kind": "epoch",
                "step": self.step,
                "epoch": finished,
                "loss": self._epoch_window[0] / self._epoch_window[1],
            }
            self._epoch_window = [0.0, 0]
            self.history.append(record)
            self._emit("on_epoch_end", record)

    def _log_window(self, lr: float) -> None:
        record = {
            "kind": "step",
            "step": self.step,
            "epoch": self.epoch,
            "loss": self._window[0] / self._window[1],
            "lr": lr,
        }
        self._window = [0.0, 0]
        self.history.append(record)
        self._emit("on_log", record)

    def validate(self) -> dict[str, float]:
        """Run ``val_fn`` on rank 0 (on EMA weights if any) and update early stopping."""
        metrics = None
        if self.is_main:
            net = self.ema.module if self.ema is not None else self.model
            was_training = net.training
            net.eval()
            try:
                with torch.no_grad():
                    metrics = {k: float(v) for k, v in self.val_fn(net).items()}
            finally:
                net.train(was_training)
        # Every rank needs the same early-stopping decision, or the others would hang.
        metrics = ranks.broadcast_object(metrics)
        record = {"kind": "val", "step": self.step, "epoch": self.epoch, **metrics}
        self.history.append(record)
        self._emit("on_validation_end", record)
        name = self.config.early_stopping_metric
        if name is None:
            return metrics
        if name not in metrics:
            raise TrainingError(
                f"early_stopping_metric {name!r} is not among the validation "
                f"metrics {sorted(metrics)}"
            )
        value, delta = metrics[name], self.config.early_stopping_min_delta
        best = self.best_metric
        improved = math.isfinite(value) and (
            best is None
            or (
                value < best - delta
                if self.config.early_stopping_mode == "min"
                else value > best + delta
            )
        )
        if improved:
            self.best_metric, self.bad_validations = value, 0
            self._save(BEST)
        else:
            self.bad_validations += 1
            patience = self.config.early_stopping_patience
            self.stopped_early = patience is not None and self.bad_validations >= patience
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def _periodic_checkpoints(self, final: bool) -> None:
        every, keep = self.config.checkpoint_every, self.config.keep_every
        if final or (every is not None and self.step % every == 0):
            self._save(LATEST)
        if keep is not None and self.step % keep == 0:
            self._save(kept_name(self.step))

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (weights_only-loadable)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "data": {
                "micro_batches": self.micro_batches,
                "batches_per_epoch": self.batches_per_epoch,
            },
            "best_metric": self.best_metric,
            "bad_validations": self.bad_validations,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "windows": [list(self._window), list(self._epoch_window)],
            "config": self.config.to_dict(),
            "world_size": self.world_size,
            "rng": None,  # filled per rank by _save
        }

    def _save(self, name: str) -> None:
        if self.checkpoint_dir is None:
            return
        # Collective: every rank contributes its RNG state, rank 0 writes the file.
        rng = ranks.all_gather_objects(capture_rng_state())
        if not self.is_main:
            return
        state = self.state_dict()
        state["rng"] = rng
        path = save_checkpoint(state, self.checkpoint_dir / name)
        if name == LATEST:
            self.latest_checkpoint = path
        elif name == BEST:
            self.best_checkpoint = path
        self._emit("on_checkpoint", path, name)

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by this engine (all ranks read the same file)."""
        path = Path(path)
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {path} has format {state.get('format')!r}, this engine reads "
                f"{CHECKPOINT_FORMAT}: it was not written by medgen.training.train"
            )
        if (state["ema"] is None) != (self.ema is None):
            raise CheckpointError(
                f"checkpoint {path} was written with ema_decay="
                f"{state['config'].get('ema_decay')} but this run has "
                f"ema_decay={self.config.ema_decay}"
            )
        if state["data"]["batches_per_epoch"] != self.batches_per_epoch:
            raise CheckpointError(
                f"checkpoint {path} has {state['data']['batches_per_epoch']} "
                f"batches per epoch, this run {self.batches_per_epoch}: the "
                "dataset, batch_size or world size changed"
            )
        changed = {k for k, v in self.config.to_dict().items() if state["config"].get(k) != v}
        if changed:
            warnings.warn(
                f"resuming {path} with changed training parameters {sorted(changed)}", stacklevel=2
            )
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.micro_batches = state["data"]["micro_batches"]
        self.best_metric = state["best_metric"]
        self.bad_validations = state["bad_validations"]
        self.stopped_early = state["stopped_early"]
        self.history = list(state["history"])
        self._window, self._epoch_window = (list(w) for w in state["windows"])
        rng = state["rng"]
        if len(rng) == self.world_size:
            restore_rng_state(rng[self.rank])
        else:  # a different world size cannot continue the same random streams
            warnings.warn(
                f"{path} was written by {len(rng)} rank(s), this run has "
                f"{self.world_size}: RNG streams are re-seeded",
                stacklevel=2,
            )
            seed_everything(self.config.seed + self.rank + self.step)
        self.latest_checkpoint = path if path.name == LATEST else None
        best = path.parent / BEST
        self.best_checkpoint = best if best.is_file() else None

    def result(self) -> TrainingResult:
        return TrainingResult(
            model_state=_cpu_state(self.model),
            ema_state=_cpu_state(self.ema.module) if self.ema is not None else None,
            history=list(self.history),
            best_metric=self.best_metric,
            steps=self.step,
            epochs=self.epoch,
            stopped_early=self.stopped_early,
            latest_checkpoint=self.latest_checkpoint,
            best_checkpoint=self.best_checkpoint,
            config=self.config.to_dict(),
        )

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)


def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: Dataset,
    config: TrainingConfig,
    *,
    val_fn: ValFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainingResult:
    """Train ``model`` in place for ``config.max_steps`` optimizer steps.

    ``loss_fn(model, batch)`` returns a scalar loss; ``batch`` is what the DataLoader
    yields from ``train_data`` (tensors, dicts, lists), already on the device. Under
    DDP ``model`` is the DDP wrapper: call it (its forward), not custom methods of the
    inner module, or gradients will not be synchronised. ``val_fn(net)`` returns
    metrics; it runs on rank 0 under ``no_grad`` with ``net`` in eval mode (the EMA
    network when ``ema_decay`` is set). With ``checkpoint_dir`` and ``resume``, an
    existing ``latest.pt`` is continued exactly. Rank 0's callbacks get the records
    described in `medgen.training.callbacks`.
    """
    trainer = Trainer(
        model,
        loss_fn,
        train_data,
        config,
        val_fn=val_fn,
        checkpoint_dir=checkpoint_dir,
        callbacks=callbacks,
    )
    return trainer.run(resume=resume)
