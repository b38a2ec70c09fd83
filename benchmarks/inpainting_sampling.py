"""Seconds and peak memory per volume of the inpainting pipeline's latent diffusion sampling (DDIM).

The model is built as the pipeline builds it, from the parameters Kedro would load: ``demo`` is
conf/base, ``cluster`` is conf/base + conf/cluster (OmegaConfigLoader with the project's
settings). The task is ``medgen.diffusion.build_task`` on
`medgen.inpainting.diffusion_training.task_config` (mode ``inpaint``, ``precomputed_latent``
space, ``inpainting.diffusion`` strategy with its DDIM sampler), the network is
``task.build_model(inpainting.diffusion.backbone)`` (MONAI's 3D DiffusionModelUNet) and the
decoder is the t1n patch-volume autoencoder of ``inpainting.autoencoder.autoencoder``. Both are
**randomly initialised**: speed and memory do not depend on the weights (the UNet's output
convolution, which MONAI zero-initialises, gets small random weights so that the samples are not
constant).

One volume per call (batch 1): a random voided latent, a box mask covering the central eighth of
the case, score mask = mask, random conditioning maps. Per step count N:

* network = ``task.inpaint(model, batch, num_steps=N, decode=False)`` (N network evaluations,
  counted on the network, plus the sampler's known-region bookkeeping);
* decode = ``task.space.decode(z)`` of that latent;
* network + decode = their sum: ``task.inpaint(decode=True)`` runs exactly these two in turn.

When one warm-up network call says that N steps would take longer than ``--max-full-seconds``,
the sampler runs ``--extrapolate-steps`` k steps and the N-step time is N / k times the k-step
time (the fixed per-call overhead is counted N / k times, so the estimate errs high); such rows
are marked ``extrapolated from k steps``.

Memory: each preset runs in a fresh subprocess. Before each phase the peak resident set size
(``VmHWM`` of /proc/self/status) is reset to the current one (/proc/self/clear_refs); a phase's
number is the growth of the peak over the RSS at its start, i.e. what sampling or decoding holds on
top of the resident weights. ``process_peak_rss_mib`` is the child's ``ru_maxrss`` (everything,
torch included). tracemalloc would miss torch's allocations. The children run with
``MALLOC_MMAP_THRESHOLD_=131072`` (large tensors mmapped and returned to the OS when freed, as in
benchmarks/decode_memory.py) unless ``--glibc-default``. Prints one JSON object (also written to
``--json``), then a Markdown table.

    uv run python benchmarks/inpainting_sampling.py [--presets demo cluster] [--steps 50 10]
        [--extrapolate-steps 2] [--max-full-seconds 120] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
PRESETS = {"demo": "base", "cluster": "cluster"}  # preset -> Kedro environment over conf/base


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakRSS:
    """Peak RSS growth of a phase: VmHWM reset through /proc/self/clear_refs where allowed, else the
    ``ru_maxrss`` delta (which shows only growth beyond the process's earlier peak)."""

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM reset (/proc/self/clear_refs)"
        except OSError:
            self.method = "ru_maxrss delta"

    def start(self) -> None:
        if self.method.startswith("VmHWM"):
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.before = _status_kib("VmRSS") * 1024
        else:
            self.before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def growth_mib(self) -> float:
        if self.method.startswith("VmHWM"):
            peak = _status_kib("VmHWM") * 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return round((peak - self.before) / MIB, 1)


def inpainting_parameters(env: str) -> dict:
    """The ``inpainting`` parameters as Kedro loads them for ``env`` (``base``: conf/base only)."""
    from kedro.config import OmegaConfigLoader

    from medgen.settings import CONFIG_LOADER_ARGS

    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = OmegaConfigLoader(str(REPO / "conf"), env=env, **args)
    return loader["parameters"]["inpainting"]


def run_preset(preset: str, steps: list[int], k: int, max_full_seconds: float) -> dict:
    """All measurements of one preset, in this (fresh) process."""
    import torch

    from medgen.datasets import TensorBundle
    from medgen.diffusion import build_task
    from medgen.inpainting.diffusion_training import CONDITIONING_CHANNELS, task_config
    from medgen.inpainting.params import DiffusionParams
    from medgen.models.patch_volume_autoencoder import build_patch_volume_autoencoder

    params = inpainting_parameters(PRESETS[preset])
    diffusion = DiffusionParams.from_params(params["diffusion"])
    size = tuple(int(s) for s in params["cases"]["size"])
    torch.manual_seed(0)
    autoencoder = build_patch_volume_autoencoder(params["autoencoder"]["autoencoder"], 1).eval()
    factor, channels = autoencoder.downsample_factor, autoencoder.latent_channels
    if any(s % factor for s in size):
        raise ValueError(f"case size {size} is not a multiple of downsample_factor {factor}")
    latent = tuple(s // factor for s in size)
    meta = {"latent_channels": channels, "downsample_factor": factor, "scale_factor": 1.0}
    config = task_config(diffusion, TensorBundle({}, meta))
    task = build_task(config, autoencoder)
    network = task.build_model(diffusion.backbone).eval()
    torch.nn.init.normal_(network.out[2].conv.weight, std=0.02)  # MONAI zero-inits it

    calls = {"n": 0}

    class CountedNetwork(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = network

        def forward(self, x, timesteps, **kwargs):
            calls["n"] += 1
            return self.net(x, timesteps, **kwargs)

    model = CountedNetwork()
    mask = torch.zeros(1, 1, *size)
    mask[(0, 0, *(slice(s // 2 - s // 4, s // 2 + s // 4) for s in size))] = 1.0  # central 1/8
    batch = {
        "voided": torch.randn(1, channels, *latent),
        "mask": mask,
        "score_mask": mask.clone(),
        "conditioning": torch.rand(1, CONDITIONING_CHANNELS, *latent),
    }
    peak = PeakRSS()

    with torch.no_grad():  # warm-up: one network call at the task's input size
        x = torch.randn(1, task.in_channels, *latent)
        start = time.perf_counter()
        network(x, torch.full((1,), 500))
        per_nfe_warmup = time.perf_counter() - start
        del x

    def sample(num_steps: int) -> tuple[torch.Tensor, dict]:
        calls["n"] = 0
        peak.start()
        start = time.perf_counter()
        z = task.inpaint(
            model,
            batch,
            num_steps=num_steps,
            generator=torch.Generator().manual_seed(0),
            decode=False,
        )
        seconds = time.perf_counter() - start
        return z, {"seconds": seconds, "nfe": calls["n"], "peak_mib": peak.growth_mib()}

    runs, z = {}, None
    extrapolate = per_nfe_warmup * max(steps) > max_full_seconds
    if extrapolate:
        z, measured = sample(k)
        for n in steps:
            runs[n] = {**measured, "seconds": measured["seconds"] * n / k, "measured_steps": k}
    else:
        for n in steps:
            z, measured = sample(n)
            runs[n] = {**measured, "measured_steps": n}

    peak.start()
    start = time.perf_counter()
    with torch.no_grad():
        decoded = task.space.decode(z)
    decode = {"seconds": time.perf_counter() - start, "peak_mib": peak.growth_mib()}
    if tuple(decoded.shape) != (1, 1, *size):
        raise RuntimeError(f"decoded {tuple(decoded.shape)}, expected {(1, 1, *size)}")

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    rows = []
    for n in steps:
        run = runs[n]
        rows.append(
            {
                "steps": n,
                "sampler": f"{diffusion.strategy} ({diffusion.strategies[diffusion.strategy].get('sampler', '-')})",
                "network_seconds": round(run["seconds"], 2),
                "network_plus_decode_seconds": round(run["seconds"] + decode["seconds"], 2),
                "network_peak_growth_mib": run["peak_mib"],
                "measured_steps": run["measured_steps"],
                "nfe_measured": run["nfe"],
                "extrapolated": run["measured_steps"] != n,
            }
        )
    return {
        "preset": preset,
        "kedro_env": PRESETS[preset],
        "case_size": list(size),
        "latent": [channels, *latent],
        "network_in_out_channels": [task.in_channels, task.out_channels],
        "backbone": dict(diffusion.backbone),
        "strategy": diffusion.strategy_config(),
        "autoencoder": autoencoder.config.to_dict(),
        "parameters": {
            "diffusion_unet": count(network),
            "autoencoder": count(autoencoder),
            "decoder": count(autoencoder.decoder),
        },
        "weights": "random initialisation (timing only)",
        "seconds_per_nfe_warmup": round(per_nfe_warmup, 3),
        "rows": rows,
        "decode_seconds": round(decode["seconds"], 2),
        "decode_peak_growth_mib": decode["peak_mib"],
        "decoded_output_mib": round(decoded.numel() * decoded.element_size() / MIB, 1),
        "memory_measure": peak.method,
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def markdown(report: dict) -> str:
    lines = [
        "| preset | case → latent | steps | network s/volume | network + decode s/volume | "
        "peak RSS growth: sampling / decode | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in report["presets"]:
        if "error" in p:
            lines.append(f"| {p['preset']} | — | — | failed | failed | — | {p['error'][-200:]!r} |")
            continue
        case = "×".join(map(str, p["case_size"]))
        lat = "×".join(map(str, p["latent"]))
        for r in p["rows"]:
            note = (
                f"extrapolated from {r['measured_steps']} steps"
                if r["extrapolated"]
                else f"measured ({r['nfe_measured']} NFE)"
            )
            lines.append(
                f"| {p['preset']} | {case} → {lat} | DDIM {r['steps']} | {r['network_seconds']:.2f} | "
                f"{r['network_plus_decode_seconds']:.2f} | {r['network_peak_growth_mib']:.0f} / "
                f"{p['decode_peak_growth_mib']:.0f} MiB | {note}; decode {p['decode_seconds']:.2f} s |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 10])
    parser.add_argument("--extrapolate-steps", type=int, default=2)
    parser.add_argument("--max-full-seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--glibc-default", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        result = run_preset(args.child, args.steps, args.extrapolate_steps, args.max_full_seconds)
        print(json.dumps(result))
        return

    import torch
    from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    env = dict(os.environ)
    if not args.glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    presets = []
    for preset in args.presets:
        command = [sys.executable, __file__, "--child", preset, "--steps", *map(str, args.steps)]
        command += ["--extrapolate-steps", str(args.extrapolate_steps)]
        command += ["--max-full-seconds", str(args.max_full_seconds)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        wall = round(time.perf_counter() - start, 1)
        if done.returncode != 0:
            presets.append({"preset": preset, "error": done.stderr[-2000:], "wall_seconds": wall})
        else:
            result = json.loads(done.stdout.strip().splitlines()[-1])
            presets.append({**result, "wall_seconds": wall})
    report = {
        "benchmark": "inpainting_sampling",
        "batch": 1,
        "allocator": "glibc default" if args.glibc_default else "MALLOC_MMAP_THRESHOLD_=131072",
        "presets": presets,
        "machine": {**machine_info(), "load_average_start": list(load_start)},
        "reference": "fastWDM3D: 1.81 s per volume on a GPU with 2 steps (its paper)",
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print()
    print(markdown(report))


if __name__ == "__main__":
    main()
