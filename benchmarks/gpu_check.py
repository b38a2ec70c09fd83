"""GPU self-check of a cluster node: does this GPU run medgen at conf/cluster's sizes?

One command, under 5 minutes on one modern GPU (``--budget`` seconds, default 270: what does not
fit is reported as skipped, never silently dropped)::

    uv run python benchmarks/gpu_check.py [--env cluster] [--steps 5] [--budget 270]
        [--no-compile] [--only SUBSTRING ...] [--output gpu_check.json]

Checks, each reported as ``ok`` / ``failed: <why>`` / ``skipped: <why>``:

1. CUDA: the device, its memory, torch's CUDA version; bf16 support, and a bf16 autocast
   matmul equal to the fp32 one within bf16's precision.
2. nccl: a one-GPU process group (file rendezvous), an all-reduce and a barrier.
3. ``torch.compile`` of the 2D diffusion UNet (the ``images`` model of conf/<env>): compile
   time of the first training step, eager and compiled training throughput.
4. Training throughput (images / s: per-GPU batch / seconds per optimizer step, after 2 warm-up
   steps) and peak memory (``torch.cuda.max_memory_allocated``) of one training step of every
   training job at conf/<env>'s sizes: the same factories and options as
   ``python -m medgen.check_config``, whose estimate is printed beside the measured peak (the
   check's method: docs/cluster.md). Batches are zeros (speed does not depend on the values);
   AdamW, autocast at the job's precision, no EMA and no DDP.
5. Sampling: seconds for 16 samples of the 2D images model and 4 latents of the 3D generator
   with their strategies' default number of steps.

Without CUDA it says so and exits 0 (nothing to check). Exit 1 when a check failed.
``--device cpu --env test --no-compile`` runs the same steps on the CPU at the test sizes: a
smoke run of this script, not a measurement of anything.
Results go to docs/benchmarks.md by hand, with the machine they ran on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: where the steps run: "cuda", or "cpu" for ``--device cpu`` (a smoke run of this script)
DEVICE = "cuda"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@dataclasses.dataclass
class Result:
    check: str
    status: str = "ok"
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Budget:
    """Seconds left of ``--budget``; a check that would start after it is skipped."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def run_check(name: str, budget: Budget, fn: Callable[[], dict[str, Any]], need: float = 5.0):
    """``fn()``'s details as a `Result`; exceptions become ``failed``, no time ``skipped``."""
    if budget.left() < need:
        return Result(name, f"skipped: time budget spent ({budget.left():.0f} s left)")
    start = time.perf_counter()
    try:
        details = fn()
    except Exception as error:  # noqa: BLE001 - every failure is a finding of the check
        traceback.print_exc(file=sys.stderr)
        return Result(name, f"failed: {type(error).__name__}: {error}", time.perf_counter() - start)
    finally:
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return Result(name, "ok", time.perf_counter() - start, details)


# ---------------------------------------------------------------- 1, 2: CUDA, bf16, nccl


def cuda_and_bf16() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    a = torch.randn(512, 512, device="cuda")
    b = torch.randn(512, 512, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = a @ b
    if low.dtype != torch.bfloat16:
        raise RuntimeError(f"autocast matmul gave {low.dtype}, not bfloat16")
    error = float((low.float() - a @ b).abs().max() / (a @ b).abs().max())
    if error > 2e-2:  # bf16 keeps 8 bits of mantissa: ~0.4 % per value
        raise RuntimeError(f"bf16 matmul differs from fp32 by {error:.3g} (relative)")
    return {
        "device": props.name,
        "memory_gib": round(props.total_memory / GIB, 1),
        "capability": f"{props.major}.{props.minor}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "bf16_matmul_relative_error": round(error, 5),
    }


def nccl_group() -> dict[str, Any]:
    import torch.distributed as dist

    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group(
            "nccl", init_method=f"file://{folder}/rendezvous", rank=0, world_size=1
        )
        try:
            value = torch.ones(4, device="cuda")
            dist.all_reduce(value)
            dist.barrier()
            if not torch.equal(value.cpu(), torch.ones(4)):
                raise RuntimeError(f"all_reduce of ones on one rank gave {value.tolist()}")
            return {
                "backend": dist.get_backend(),
                "nccl": ".".join(map(str, torch.cuda.nccl.version())),
            }
        finally:
            dist.destroy_process_group()


# ---------------------------------------------------------------- 3, 4: training steps


def cuda_batch(item: Any, batch_size: int) -> Any:
    """A batch of zeros shaped like ``batch_size`` dataset items, on the GPU."""
    from torch.utils._pytree import tree_map

    def batched(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return torch.zeros((batch_size, *value.shape), dtype=value.dtype, device=DEVICE)
        return value

    return tree_map(batched, item)


def build_on_gpu(probe) -> Any:
    """The probe's task with real weights, its model on the GPU."""
    options = dict(probe.options)
    if "device" in options:
        options["device"] = DEVICE  # where a factory puts a frozen autoencoder
    task = probe.factory(probe.data(), **options)
    task.model.to(DEVICE)
    return task


def time_steps(task, batch, precision: str, steps: int, model=None) -> tuple[float, float]:
    """(seconds per optimizer step after 2 warm-up steps, seconds of the first step)."""
    model = model or task.model
    optimizer = torch.optim.AdamW([p for p in task.model.parameters() if p.requires_grad])
    dtype = AUTOCAST.get(precision)
    use = dtype is not None and DEVICE == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if use else nullcontext
    model.train()
    times = []
    for _ in range(steps + 2):
        synchronize()
        start = time.perf_counter()
        with autocast():
            loss = task.loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        times.append(time.perf_counter() - start)
    return sum(times[2:]) / len(times[2:]), times[0]


def training_step(probe, estimate, steps: int) -> dict[str, Any]:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    task = build_on_gpu(probe)
    batch_size = probe.training.batch_size
    batch = cuda_batch(task.train_data[0], batch_size)
    seconds, _ = time_steps(task, batch, probe.training.precision, steps)
    details = {
        "batch_per_gpu": batch_size,
        "precision": probe.training.precision,
        "images_per_second": round(batch_size / seconds, 1),
        "seconds_per_step": round(seconds, 4),
    }
    if DEVICE == "cuda":
        details["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    if estimate is not None and estimate.memory is not None:
        # the check counts EMA and DDP buckets too; this loop has neither
        details["check_config_estimate_gib"] = round(estimate.memory.total / GIB, 2)
    return details


def compiled_unet(probe, steps: int) -> dict[str, Any]:
    task = build_on_gpu(probe)
    batch = cuda_batch(task.train_data[0], probe.training.batch_size)
    eager, _ = time_steps(task, batch, probe.training.precision, steps)
    compiled = torch.compile(task.model)
    seconds, first = time_steps(task, batch, probe.training.precision, steps, model=compiled)
    size = probe.training.batch_size
    return {
        "first_step_seconds (compile)": round(first, 1),
        "eager_images_per_second": round(size / eager, 1),
        "compiled_images_per_second": round(size / seconds, 1),
    }


# ---------------------------------------------------------------- 5: sampling


@torch.no_grad()
def sampling(probe, n: int, cond: Callable[[int, Any], Any], spatial) -> dict[str, Any]:
    task = build_on_gpu(probe)
    model = task.model.eval()
    diffusion = task.loss_fn.__self__  # the DiffusionTask whose loss the job trains
    synchronize()
    start = time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if DEVICE == "cuda" else nullcontext()
    with autocast:
        diffusion.generate(model, n, cond(n, diffusion), spatial_shape=spatial)
    synchronize()
    steps = getattr(diffusion.strategy, "num_inference_steps", None)
    return {"samples": n, "solver_steps": steps, "seconds": round(time.perf_counter() - start, 2)}


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="cluster")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (default 5)")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for everything")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    parser.add_argument("--only", nargs="*", help="only models whose name contains one of these")
    parser.add_argument("--output", help="also write the results as JSON")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="cpu: a smoke run of this script (e.g. --env test), not a GPU check",
    )
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = args.device

    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine: nothing to check (exit 0).")
        return 0

    import warnings

    warnings.simplefilter("ignore")  # library deprecations are not this check's findings
    from medgen.check_config.check import JOBS
    from medgen.check_config.jobs_inpainting import inpainting_jobs
    from medgen.check_config.models import check_job
    from medgen.check_config.parameters import load_parameters

    budget = Budget(args.budget)
    results = []
    if DEVICE == "cuda":
        results.append(run_check("CUDA + bf16 autocast", budget, cuda_and_bf16))
        results.append(run_check("nccl process group (1 GPU)", budget, nccl_group))

    params = load_parameters(args.env, REPO / "conf")
    probes = []
    for pipeline, jobs in JOBS.items():
        if pipeline == "evaluation":
            continue  # its two networks train on the CPU
        if pipeline == "inpainting":
            probes += inpainting_jobs(params, meta_weights=False)
        else:
            probes += jobs(params)
    if args.only:
        probes = [p for p in probes if any(s in p.model for s in args.only)]
    images = next((p for p in probes if p.model.startswith("2D images model")), None)

    if not args.no_compile and images is not None:
        check = f"torch.compile: {images.model}"
        results.append(run_check(check, budget, lambda: compiled_unet(images, args.steps), 60))
    for probe in probes:
        estimate = check_job(probe)  # the meta-device estimate, for comparison
        name = f"training step: {probe.pipeline} / {probe.model}"
        results.append(
            run_check(name, budget, lambda p=probe, e=estimate: training_step(p, e, args.steps))
        )
    if images is not None:

        def mask(n, _task):
            size = next(iter(images.data().values()))["images"].shape[-1]
            return torch.zeros(n, 1, size, size, device=DEVICE) - 1.0  # no lesion

        results.append(
            run_check(
                "sampling: 2D images model, 16 samples",
                budget,
                lambda: sampling(images, 16, mask, None),
            )
        )
    dit = next((p for p in probes if p.model.startswith("3D class-conditional")), None)
    if dit is not None:
        latent = list(next(iter(dit.data().values()))["latents"].shape[2:])
        factor = dit.options["task_config"]["space"].get("downsample_factor", 1)

        def labels(n, _task):
            return torch.arange(n, device=DEVICE) % 2

        results.append(
            run_check(
                "sampling: 3D generator, 4 latents",
                budget,
                lambda: sampling(dit, 4, labels, [s * factor for s in latent]),
            )
        )

    print("| check | status | seconds | details |")
    print("|---|---|---|---|")
    for r in results:
        details = ", ".join(f"{k}: {v}" for k, v in r.details.items())
        print(f"| {r.check} | {r.status} | {r.seconds:.1f} | {details} |")
    if args.output:
        Path(args.output).write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    return 1 if any(r.status.startswith("failed") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
