"""Wall-time cost of the training diagnostics (``training.logging``) on the demo 2D image job.

    uv run python benchmarks/diagnostics_overhead.py [--steps 800] [--keep-schedule]
        [--repeats 1] [--no-mlflow] [--data-dir data/05_model_input] [--threads N]

The job is latent_diffusion's ``images`` role of conf/base/parameters_latent_diffusion.yml:
mask → BRAVO with its strategy (rectified flow, 30 Euler steps), backbone, resolution (32²) and
training block, built by the node's own factory (`build_diffusion_task`, which attaches the
diagnostics) and trained by `medgen.training.train` with the diagnostics every job gets
(`engine_diagnostics`). It is trained twice from the same seed: with the conf/base
``training.logging`` block (``on``) and with every diagnostic switched off (``off``), each into
a fresh checkpoint folder, inside an MLflow run on a temporary sqlite store (as kedro-mlflow
runs a node; ``--no-mlflow``: figures go to the checkpoint folder instead). The ratio on / off
of the two ``train`` wall times is the overhead, and the ratio of their process CPU times
(``time.process_time``, all threads) the same measured in CPU seconds, which other jobs on a
shared machine disturb far less than wall time; with ``--repeats`` > 1 the runs alternate
(off, on, off, on, ...) and the medians are compared. Data: slices_2d_train.safetensors from
``--data-dir`` when present (the demo's 984 slices), else 256 synthetic slices with square
lesions. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

from medgen.datasets import TensorBundle, TensorDataset
from medgen.generation.settings import model_settings
from medgen.generation.slices import prepare_slices
from medgen.generation.training_job import build_diffusion_task
from medgen.training import MlflowCallback, TrainingConfig, train
from medgen.training.diagnostics import engine_diagnostics

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ["t1_pre", "t1_gd", "flair", "bravo"]
STEP_INTERVALS = ("grad_norm", "throughput", "validation", "intermediate_steps")


def demo_settings():
    params = yaml.safe_load((ROOT / "conf/base/parameters_latent_diffusion.yml").read_text())
    block = params["latent_diffusion"]
    return model_settings("images", block["images"], block["shared"], MODALITIES)


def slices(data_dir: Path, resolution: int) -> TensorBundle:
    path = data_dir / "slices_2d_train.safetensors"
    if path.is_file():
        bundle = TensorDataset(filepath=str(path)).load()
    else:  # square lesions, brighter than their surroundings
        g = torch.Generator().manual_seed(0)
        seg = torch.zeros(256, 1, 64, 64, dtype=torch.long)
        for i in range(256):
            r, c = torch.randint(8, 48, (2,), generator=g).tolist()
            seg[i, 0, r : r + 8, c : c + 8] = 1
        images = torch.rand(256, 4, 64, 64, generator=g) * 0.4 - 0.6
        images = torch.where(seg > 0, images + 1.0, images)
        bundle = TensorBundle({"images": images, "seg": seg}, {"modalities": MODALITIES})
    return prepare_slices(bundle, resolution)


def logging_off(logging: dict) -> dict:
    return {name: {**block, "enabled": False} for name, block in logging.items()}


def run(settings, bundle: TensorBundle, training: dict, folder: Path, experiment: str | None):
    task = build_diffusion_task(
        {"slices": bundle},
        task_config=settings.task_config,
        backbone=settings.backbone,
        seed=int(training["seed"]),
        device="cpu",
    )
    config = TrainingConfig.from_dict({**training, "progress": False})
    callbacks = [*task.callbacks, *engine_diagnostics(), MlflowCallback(prefix="bench")]
    session = contextlib.nullcontext()
    if experiment is not None:
        import mlflow

        session = mlflow.start_run(experiment_id=experiment)
    with session as active:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = train(
            task.model,
            task.loss_fn,
            task.train_data,
            config,
            checkpoint_dir=folder,
            resume=False,
            callbacks=callbacks,
        )
        seconds = (time.perf_counter() - start, time.process_time() - cpu_start)
        if experiment is not None:
            client = mlflow.MlflowClient()
            found = client.list_artifacts(active.info.run_id, "training/diagnostics")
            return seconds, result, sorted(Path(f.path).name for f in found)
    return seconds, result, sorted(p.name for p in (folder / "diagnostics").glob("*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="default: conf/base max_steps")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data/05_model_input")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument(
        "--keep-schedule",
        action="store_true",
        help="with --steps: scale the step intervals so the run has the demo's number of "
        "validations and trajectories (fixed costs then weigh more: an upper bound)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = demo_settings()
    bundle = slices(args.data_dir, settings.resolution)
    training = copy.deepcopy(settings.training)
    if args.steps is not None:
        scale = args.steps / training["max_steps"]
        training["max_steps"] = args.steps
        training["warmup_steps"] = min(training["warmup_steps"], args.steps - 1)
        if args.keep_schedule:
            for name in STEP_INTERVALS:
                block = training["logging"][name]
                block["every"] = max(1, round(block["every"] * scale))
    variants = {"off": {**training, "logging": logging_off(training["logging"])}, "on": training}
    times: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    loads: dict[str, list[float]] = {"off": [], "on": []}
    details = {}
    with tempfile.TemporaryDirectory(prefix="medgen-diag-bench-") as tmp:
        experiment = None
        if not args.no_mlflow:  # a throw-away store: nothing is written into the checkout
            import mlflow

            mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
            experiment = mlflow.create_experiment("bench", artifact_location=f"{tmp}/artifacts")
        for r in range(args.repeats):
            for name in ("off", "on"):
                folder = Path(tmp) / f"{name}_{r}"
                (seconds, cpu_seconds), result, files = run(
                    settings, bundle, variants[name], folder, experiment
                )
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
                loads[name].append(os.getloadavg()[1])  # the 5-minute load over the run's end
                details[name] = {"figures": files, "final_loss": result.history[-1]["loss"]}
                print(
                    f"{name} run {r}: {seconds:.1f} s wall, {cpu_seconds:.1f} s CPU",
                    file=sys.stderr,
                    flush=True,
                )
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(
        json.dumps(
            {
                "job": f"{settings.combination} ({settings.role}), {settings.resolution}px",
                "steps": training["max_steps"],
                "logging_on": training["logging"],
                "batch_size": training["batch_size"],
                "train_slices": int(bundle["images"].shape[0]),
                "mlflow": not args.no_mlflow,
                "seconds_off": times["off"],
                "seconds_on": times["on"],
                "ratio_on_off": round(on / off, 4),
                "cpu_seconds_off": cpu["off"],
                "cpu_seconds_on": cpu["on"],
                "cpu_ratio_on_off": round(cpu_on / cpu_off, 4),
                "load_average_5min_at_end": loads,
                "figures_on": details["on"]["figures"],
                "machine": machine_info(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
