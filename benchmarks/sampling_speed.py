"""Sampling speed of DDPM-1000, DDIM-50 and rectified-flow-30 with the default DiffusionModelUNet.

Measures the time of one network function evaluation (NFE), then the wall time of complete
samplers through medgen.diffusion. DDPM with all 1000 steps is run only when its estimate
(1000 × time per NFE plus the sampler overhead measured on DDIM) fits ``--max-full-seconds``;
otherwise it is reported as an estimate, marked ``"estimated": true``. Prints one JSON object.

    uv run python benchmarks/sampling_speed.py [--size 32] [--batch 8] [--max-full-seconds 300]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

from medgen.diffusion import DDPMStrategy, RectifiedFlowStrategy
from medgen.models import build_diffusion_unet, validate_diffusion_unet_config


class NFECounter(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x, timesteps):
        self.calls += 1
        return self.model(x, timesteps)


def timed_sample(strategy, model: NFECounter, shape, cond, steps: int) -> dict:
    model.calls = 0
    start = time.perf_counter()
    strategy.sample(model, shape, cond, num_steps=steps, generator=torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - start
    return {"seconds": round(elapsed, 2), "nfe": model.calls, "estimated": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--nfe-repeats", type=int, default=10)
    parser.add_argument("--max-full-seconds", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config: dict = {}  # the factory's defaults
    model = NFECounter(build_diffusion_unet(config, in_channels=2, out_channels=1).eval())
    torch.nn.init.normal_(model.model.out[2].conv.weight, std=0.02)  # MONAI zero-inits it
    shape = (args.batch, 1, args.size, args.size)
    cond = torch.where(torch.rand(args.batch, 1, args.size, args.size) > 0.9, 1.0, -1.0)
    x = torch.randn(args.batch, 2, args.size, args.size)
    t = torch.full((args.batch,), 500)

    with torch.no_grad():
        for _ in range(2):
            model(x, t)
        start = time.perf_counter()
        for _ in range(args.nfe_repeats):
            model(x, t)
        per_nfe = (time.perf_counter() - start) / args.nfe_repeats

    results = {
        "ddim_50": timed_sample(DDPMStrategy(sampler="ddim"), model, shape, cond, 50),
        "rflow_30": timed_sample(RectifiedFlowStrategy(), model, shape, cond, 30),
    }
    overhead = results["ddim_50"]["seconds"] / 50 - per_nfe  # scheduler step etc.
    ddpm_estimate = 1000 * (per_nfe + max(overhead, 0.0))
    if ddpm_estimate <= args.max_full_seconds:
        results["ddpm_1000"] = timed_sample(DDPMStrategy(sampler="ddpm"), model, shape, cond, 1000)
    else:
        results["ddpm_1000"] = {
            "seconds": round(ddpm_estimate, 2),
            "nfe": 1000,
            "estimated": True,
            "note": f"estimated as 1000 x (time per NFE + per-step overhead from DDIM-50); a full run "
            f"would exceed --max-full-seconds={args.max_full_seconds}",
        }
    ddpm = results["ddpm_1000"]["seconds"]
    report = {
        "benchmark": "sampling_speed",
        "network": validate_diffusion_unet_config(config),  # the defaults, filled in
        "batch": args.batch,
        "size": args.size,
        "seconds_per_nfe": round(per_nfe, 4),
        "samplers": results,
        "speedup_vs_ddpm_1000": {
            "ddim_50": round(ddpm / results["ddim_50"]["seconds"], 1),
            "rflow_30": round(ddpm / results["rflow_30"]["seconds"], 1),
        },
        "nfe_ratio_vs_ddpm_1000": {"ddim_50": 1000 / 50, "rflow_30": round(1000 / 30, 1)},
        "machine": machine_info(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
