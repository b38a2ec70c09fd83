"""Tiny deterministic training run used by test_resume.py.

    python resume_script.py CHECKPOINT_DIR OUTPUT_FILE [KILL_AT_STEP]

Trains, through the one training job (`medgen.training.run_job`), an MLP with dropout, EMA, warmup+cosine, accumulation, clipping, validation
that draws random numbers, and a dataset whose samples draw augmentation noise, so
every piece of state a resume must restore influences the final weights. With
KILL_AT_STEP the process SIGKILLs itself right after that optimizer step.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import TensorDataset

from medgen.datasets import TensorBundle
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job

CONFIG = {
    "max_steps": 14,
    "batch_size": 4,
    "accum_steps": 2,
    "lr": 0.02,
    "warmup_steps": 3,
    "min_lr_ratio": 0.1,
    "max_grad_norm": 0.5,
    "ema_decay": 0.8,
    "val_every": 4,
    "early_stopping_metric": "val_loss",
    "early_stopping_patience": 100,
    "checkpoint_every": 3,
    "log_every": 2,
    "seed": 3,
    "progress": False,
    "device": "cpu",
}


def resume_task(data, kill_at: int | None = None) -> TrainingTask:
    """The job's factory: the MLP, the noisy dataset, a validation that draws random numbers."""
    import training_tasks as tt

    xy = data["regression"]
    dataset = tt.NoisyDictDataset(TensorDataset(xy["x"], xy["y"]))
    model = tt.mlp(dropout=0.2, seed=1)
    val_x = torch.randn(8, 6, generator=torch.Generator().manual_seed(9))

    def val_fn(net):
        # Draws from the global RNG on purpose (like sampling noise would).
        noisy = val_x + 0.01 * torch.randn_like(val_x)
        return {"val_loss": float(net(noisy).pow(2).mean())}

    callbacks = [tt.KillAtStep(kill_at)] if kill_at is not None else []
    return TrainingTask(model, tt.dict_mse_loss, dataset, val_fn=val_fn, callbacks=callbacks)


def main(checkpoint_dir: str, output: str, kill_at: int | None = None) -> None:
    import training_tasks as tt

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x, y = tt.regression_data(n=40).tensors
    job = TrainingJob(
        name="resume",
        factory=resume_task,
        config=TrainingConfig.from_dict(CONFIG),
        checkpoint_dir=checkpoint_dir,
        data={"regression": TensorBundle({"x": x, "y": y})},
        runtime_options={"kill_at": kill_at},
    )
    result = run_job(job).result
    torch.save(
        {
            "model": result.model_state,
            "ema": result.ema_state,
            "history": result.history,
            "steps": result.steps,
        },
        output,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
