"""Training throughput (images/s) of the default DiffusionModelUNet on this machine.

A bare AdamW loop (ε-prediction MSE, random timesteps) over random data, so only the network's
forward + backward + optimiser step is timed. Prints one JSON object.

    uv run python benchmarks/training_throughput.py [--sizes 32 64] [--batch 16] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

from medgen.models import build_diffusion_unet, validate_diffusion_unet_config


def measure(
    size: int, batch: int, seconds: float, warmup: int, max_steps: int, config: dict
) -> dict:
    torch.manual_seed(0)
    model = build_diffusion_unet(config, in_channels=2, out_channels=1)  # mask-conditioned image
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 2, size, size)
    target = torch.randn(batch, 1, size, size)

    def step() -> None:
        timesteps = torch.randint(0, 1000, (batch,))
        loss = torch.nn.functional.mse_loss(model(x, timesteps), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    steps, start = 0, time.perf_counter()
    while steps < max_steps and (steps < 2 or time.perf_counter() - start < seconds):
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    return {
        "size": size,
        "batch": batch,
        "steps": steps,
        "seconds": round(elapsed, 2),
        "seconds_per_step": round(elapsed / steps, 4),
        "images_per_second": round(steps * batch / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=40.0, help="time budget per size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config: dict = {}  # the factory's defaults
    results = [
        measure(s, args.batch, args.seconds, args.warmup, args.max_steps, config)
        for s in args.sizes
    ]
    report = {
        "benchmark": "training_throughput",
        "network": validate_diffusion_unet_config(config),  # the defaults, filled in
        "parameters": sum(p.numel() for p in build_diffusion_unet(config, 2, 1).parameters()),
        "machine": machine_info(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
