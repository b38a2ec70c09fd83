"""Per-step overhead of `medgen.training.train` versus a bare PyTorch loop.

    uv run python benchmarks/engine_overhead.py [--steps 10] [--warmup 3] [--rounds 2]

Both loops train the same MONAI DiffusionModelUNet (2D, channels 32/64/64, attention
at the lowest level) with AdamW on batches of 16 1x32x32 images drawn by a
DataLoader, with an MSE noise-prediction loss. The engine runs with the options that
change nothing numerically switched off (no EMA, no clipping, fp32, no progress bar)
so both do the same arithmetic; what is left is the engine's real per-step path:
sampler, device move, autocast context, loss bookkeeping with its non-finite check,
scheduler, callbacks. Each step is timestamped after the optimizer update; the
first ``--warmup`` steps of every run are discarded. Rounds alternate engine / bare
and the median per-step time of each is compared. Prints one JSON object; the
goal is ``ratio <= 1.05``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)
from torch.utils.data import DataLoader, TensorDataset

from medgen.models import build_diffusion_unet
from medgen.training import Callback, TrainingConfig, train

BATCH, SIZE, NUM_TRAIN_TIMESTEPS = 16, 32, 1000
# Spelt out rather than left to the factory's defaults, so the measured network stays
# the one named in the output. Heads matter only at the attention level: one of 64.
UNET = {
    "spatial_dims": 2,
    "channels": (32, 64, 64),
    "attention_levels": (False, False, True),
    "num_res_blocks": 1,
    "num_head_channels": 64,
}


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_diffusion_unet(UNET, in_channels=1, out_channels=1)


def noise_prediction_loss(model, batch) -> torch.Tensor:
    (images,) = batch
    noise = torch.randn_like(images)
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (images.shape[0],), device=images.device)
    alpha = (1 - t.float() / NUM_TRAIN_TIMESTEPS).view(-1, 1, 1, 1)
    noisy = alpha.sqrt() * images + (1 - alpha).sqrt() * noise
    return torch.nn.functional.mse_loss(model(noisy, timesteps=t), noise)


class StepClock(Callback):
    def __init__(self):
        self.stamps: list[float] = []

    def on_step_end(self, trainer) -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())


def per_step(stamps: list[float], warmup: int) -> float:
    timed = stamps[warmup - 1 :]  # the stamp of the last warmup step starts the clock
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def run_engine(data, steps: int, warmup: int, device: str) -> float:
    config = TrainingConfig(
        max_steps=warmup + steps,
        batch_size=BATCH,
        lr=1e-4,
        max_grad_norm=None,
        ema_decay=None,
        precision="fp32",
        log_every=10_000,
        progress=False,
        device=device,
        seed=0,
    )
    clock = StepClock()
    train(make_model(), noise_prediction_loss, data, config, callbacks=[clock])
    return per_step(clock.stamps, warmup)


def run_bare(data, steps: int, warmup: int, device: str) -> float:
    model = make_model().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = DataLoader(
        data,
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    stamps, total = [], warmup + steps
    while len(stamps) < total:
        for (images,) in loader:
            loss = noise_prediction_loss(model, (images.to(device),))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            if len(stamps) == total:
                break
    return per_step(stamps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1")

    data = TensorDataset(
        torch.randn(BATCH * 8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    )
    engine, bare = [], []
    for _ in range(args.rounds):
        engine.append(run_engine(data, args.steps, args.warmup, args.device))
        bare.append(run_bare(data, args.steps, args.warmup, args.device))
    engine_s, bare_s = statistics.median(engine), statistics.median(bare)
    print(
        json.dumps(
            {
                "benchmark": "engine_overhead",
                "model": "DiffusionModelUNet 2D (32,64,64) attn (F,F,T) batch 16 @ 32x32",
                "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
                "machine": machine_info(),
                "timed_steps_per_run": args.steps,
                "warmup_steps": args.warmup,
                "rounds": args.rounds,
                "engine_s_per_step": round(engine_s, 5),
                "bare_s_per_step": round(bare_s, 5),
                "engine_runs": [round(x, 5) for x in engine],
                "bare_runs": [round(x, 5) for x in bare],
                "ratio": round(engine_s / bare_s, 4),
                "goal": "ratio <= 1.05",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
