"""Sample quality per network evaluation: DDPM (DDIM sampler), rectified flow (Euler), EDM (Heun).

The demo mask→BRAVO task in pixel space at 32²: the ``images`` role of
conf/base/parameters_latent_diffusion.yml (its backbone, training config, strategy options with
condition dropout 0.1, and guidance scale 2.0; EDM gets its defaults plus the same dropout). One
network per strategy is trained with the same backbone, data, number of steps and seed, then
sampled at equal numbers of network evaluations per sample (NFE), from the masks of held-out real
slices (val + test splits). Per (strategy, NFE) it records the sampling wall time, the in-domain
Fréchet distance to those real slices (``medgen.metrics.fid_with_floor`` with the in-domain
encoder trained on the training split, as the evaluation pipeline does; with its real-vs-real
floor) and the lesion contrast at the mask (``medgen.generation.lesion_contrast``).

NFE vs steps: DDIM and Euler make one evaluation per step. EDM's Heun sampler makes 2 N − 1 for N
steps (two per step, one for the final Euler step to σ = 0), so N = (NFE + 1) // 2, rounded down
so EDM never gets more evaluations than the others: NFE 10, 20, 30 → 5, 10, 15 steps → 9, 19, 29
evaluations. The table reports the NFE counted on the network, not the target.

Data: slices_2d_{train,val,test}.safetensors from ``--data-dir`` (default data/05_model_input)
when present; otherwise data_processing runs the way the tests run it, ``kedro run --pipeline
data_processing`` in a temporary copy of the project (conf/ and pyproject.toml), with
``--subjects`` subjects (default 8), so the checkout's data/ is never written. Prints one JSON
object, then a Markdown table.

    uv run python benchmarks/bench_sampler_nfe.py [--train-steps 300] [--samples 64] [--batch 64]
        [--nfe 10 20 30] [--data-dir DIR] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from machine import machine_info  # benchmarks/machine.py (scripts run from this folder)

from medgen.data.labels import has_lesion
from medgen.datasets import TensorBundle, TensorDataset
from medgen.diffusion import build_task, lesion_condition
from medgen.generation.lesion_contrast import lesion_contrast_report
from medgen.generation.settings import deep_merge
from medgen.generation.slices import SliceDataset, prepare_slices, resize_slices
from medgen.metrics import fid_with_floor, in_domain_backbone, train_in_domain_backbone
from medgen.training import TrainingConfig, train

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
STRATEGIES = ("ddpm", "rflow", "edm")  # ddpm samples with DDIM (the demo's sampler)
OVERRIDABLE = ("backbone", "training", "strategies")  # what a role block may override


class NetworkCallCounter(torch.nn.Module):
    """Counts network evaluations, so the table reports what was run, not what was asked."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x, timesteps, **kwargs):
        self.calls += 1
        return self.model(x, timesteps, **kwargs)


def solver_steps_for(strategy_name: str, nfe: int) -> int:
    """Solver steps giving at most ``nfe`` evaluations (Heun: 2 N − 1 ≤ NFE)."""
    return (nfe + 1) // 2 if strategy_name == "edm" else nfe


def build_slices_with_kedro(subjects: int) -> dict[str, TensorBundle]:
    """Run data_processing in a temporary copy of the project (as tests/kedro_project.py does)."""
    with tempfile.TemporaryDirectory(prefix="medgen-bench-nfe-") as folder:
        project = Path(folder)
        shutil.copytree(REPO / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
        (project / "conf" / "local").mkdir()
        shutil.copy(REPO / "pyproject.toml", project / "pyproject.toml")
        (project / "src").mkdir()  # Kedro checks it exists; medgen is imported from the install
        command = [sys.executable, "-m", "kedro", "run", "--pipeline", "data_processing"]
        command += ["--params", f"cohort.n_subjects={subjects}"]
        subprocess.run(command, cwd=project, check=True, capture_output=True)
        inputs = project / "data" / "05_model_input"
        return {
            split: TensorDataset(filepath=str(inputs / f"slices_2d_{split}.safetensors")).load()
            for split in SPLITS
        }


def load_slices(data_dir: Path, subjects: int) -> tuple[dict[str, TensorBundle], str]:
    paths = {split: data_dir / f"slices_2d_{split}.safetensors" for split in SPLITS}
    if all(path.is_file() for path in paths.values()):
        bundles = {split: TensorDataset(filepath=str(path)).load() for split, path in paths.items()}
        return bundles, f"{data_dir} (data_processing output)"
    source = f"data_processing run for this benchmark, {subjects} subjects (none in {data_dir})"
    return build_slices_with_kedro(subjects), source


def held_out_reference(bundles: dict[str, TensorBundle], resolution: int, limit: int, seed: int):
    """Val + test slices at ``resolution``: BRAVO images, lesion masks, patient groups."""
    parts, offset = [], 0
    for split in ("val", "test"):
        bundle = resize_slices(bundles[split], resolution)
        bravo = bundle.metadata["modalities"].index("bravo")
        groups = bundle["subject_index"] + offset  # patients of both splits stay distinct
        offset = int(groups.max()) + 1 if len(groups) else offset
        parts.append((bundle["images"][:, bravo : bravo + 1], bundle["seg"], groups))
    images, seg, groups = (torch.cat(tensors) for tensors in zip(*parts, strict=True))
    if len(images) > limit:
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:limit]
        keep = keep.sort().values
        images, seg, groups = images[keep], seg[keep], groups[keep]
    return images.float(), (seg > 0).to(torch.uint8), groups


def demo_image_model(strategy: str, train_steps: int, modalities: list[str]) -> dict:
    """The demo image model's task config, backbone and training config (for ``train_steps``)
    and the generation block, read from the latent_diffusion parameters."""
    params = yaml.safe_load((REPO / "conf/base/parameters_latent_diffusion.yml").read_text())
    params = params["latent_diffusion"]
    shared = params.get("shared", params)  # the shared block (top level in older layouts)
    role = params["images"]
    merged = {key: deep_merge(shared[key], role.get(key)) for key in OVERRIDABLE}
    # EDM is not in the demo parameters: its defaults, with the demo's condition dropout
    edm = {"cond_drop_prob": merged["strategies"]["rflow"]["cond_drop_prob"]}
    strategies = {"edm": edm, **merged["strategies"]}
    training = {
        **merged["training"],
        "max_steps": train_steps,
        "warmup_steps": min(int(merged["training"]["warmup_steps"]), train_steps // 10),
        "checkpoint_every": None,
        "progress": False,
    }
    task_config = {
        "strategy": {"name": strategy, **strategies[strategy]},
        "mode": role["mode"],
        "modalities": list(modalities),
        "space": {"name": "pixel"},
    }
    return {
        "task": task_config,
        "backbone": merged["backbone"],
        "training": training,
        "resolution": int(role.get("resolution") or shared["resolution"]),
        "generation": params["generation"],
    }


def train_image_model(strategy: str, train_slices: TensorBundle, train_steps: int):
    demo = demo_image_model(strategy, train_steps, train_slices.metadata["modalities"])
    task = build_task(demo["task"])
    config = TrainingConfig.from_dict(demo["training"])
    torch.manual_seed(config.seed)  # the same initial weights for every strategy
    model = task.build_model(demo["backbone"])
    start = time.perf_counter()
    result = train(model, task.loss, SliceDataset(train_slices), config)
    seconds = time.perf_counter() - start
    use_ema = bool(demo["generation"]["use_ema"]) and result.ema_state is not None
    if use_ema:
        model.load_state_dict(result.ema_state)
    last_losses = [r["loss"] for r in result.history if r.get("kind") == "step"][-3:]
    record = {
        "strategy": task.strategy.to_config(),
        "train_seconds": round(seconds, 1),
        "loss_last_30_steps": round(sum(last_losses) / max(len(last_losses), 1), 4),
        "weights": "ema" if use_ema else "raw",
    }
    return task, model.eval(), record


def in_domain_feature_backbone(train_slices: TensorBundle, seed: int):
    """The evaluation pipeline's in-domain FID encoder (its parameters), trained on the training
    split at the benchmark's resolution."""
    params = yaml.safe_load((REPO / "conf/base/parameters_evaluation.yml").read_text())
    params = params["evaluation"]["in_domain_backbone"]
    index = torch.randperm(len(train_slices), generator=torch.Generator().manual_seed(seed))
    index = index[: params["max_train_slices"] or len(train_slices)].sort().values
    labels = {"lesion": has_lesion(train_slices["seg"][index]).long()}
    encoder, _ = train_in_domain_backbone(
        train_slices["images"][index],
        labels if params["lesion_head"] else None,
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        learning_rate=float(params["learning_rate"]),
        feature_dim=int(params["feature_dim"]),
        width=int(params["width"]),
        seed=seed,
    )
    size = train_slices["images"].shape[-1]
    return in_domain_backbone(encoder, provenance=f"trained on the real training split, {size}²")


def sample(task, model, masks, steps, guidance_scale, batch_size, seed):
    counter = NetworkCallCounter(model)
    cond = lesion_condition(masks)
    generator = torch.Generator().manual_seed(seed)
    chunks, start = [], time.perf_counter()
    for begin in range(0, len(cond), batch_size):
        chunk = cond[begin : begin + batch_size]
        chunks.append(
            task.generate(
                counter,
                cond=chunk,
                num_steps=steps,
                guidance_scale=guidance_scale,
                generator=generator,
            )
        )
    seconds = time.perf_counter() - start
    batches = -(-len(cond) // batch_size)
    return torch.cat(chunks), seconds, counter.calls // batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=300, help="per model (demo: 800)")
    parser.add_argument("--samples", type=int, default=64, help="held-out masks sampled from")
    parser.add_argument("--batch", type=int, default=64, help="sampling batch (guided: 2x)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "05_model_input")
    parser.add_argument("--subjects", type=int, default=8, help="only if data must be built")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="defaults 60 steps, 32, NFE 10 20")
    if "--quick" in sys.argv:  # smaller defaults; options given explicitly still win
        parser.set_defaults(train_steps=60, samples=32, nfe=[10, 20])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"benchmark": "bench_sampler_nfe", "machine_at_start": machine_info()}

    start = time.perf_counter()
    bundles, data_source = load_slices(args.data_dir, args.subjects)
    data_seconds = time.perf_counter() - start
    demo = demo_image_model("rflow", args.train_steps, bundles["train"].metadata["modalities"])
    resolution, generation = demo["resolution"], demo["generation"]
    train_slices = prepare_slices(bundles["train"], resolution, "all")
    real, masks, groups = held_out_reference(bundles, resolution, args.samples, args.seed)
    backbone = in_domain_feature_backbone(train_slices, args.seed)
    report["data"] = {
        "source": data_source,
        "seconds": round(data_seconds, 1),
        "train_slices": len(train_slices),
        "reference": "val + test slices (held-out patients), BRAVO channel",
        "reference_slices": len(real),
        "reference_with_lesion": int(has_lesion(masks).sum()),
        "resolution": resolution,
    }
    guidance_scale = float(generation["guidance_scale"])
    report["settings"] = {
        "train_steps": args.train_steps,
        "backbone": demo["backbone"],
        "training": demo["training"],
        "guidance_scale": guidance_scale,
        "sampling_batch": args.batch,
        "torch_threads": torch.get_num_threads(),
        "nfe_targets": args.nfe,
        "fid_backbone": backbone.name,
    }
    contrast_real = lesion_contrast_report(real, masks, real, masks)["real"]
    report["real_lesion_contrast"] = contrast_real

    models, rows = {}, []
    for name in STRATEGIES:
        task, model, record = train_image_model(name, train_slices, args.train_steps)
        models[name] = record
        print(json.dumps({"trained": record}), file=sys.stderr, flush=True)
        sample(task, model, masks[:2], 1, guidance_scale, 2, args.seed)  # warm-up
        for nfe in args.nfe:
            steps = solver_steps_for(name, nfe)
            images, seconds, calls = sample(
                task, model, masks, steps, guidance_scale, args.batch, args.seed
            )
            fid = fid_with_floor(real, images, backbone, seed=args.seed, groups=groups)
            contrast = lesion_contrast_report(images, masks, real, masks)
            rows.append(
                {
                    "strategy": name,
                    "sampler": str(task.strategy.sampler),
                    "nfe_target": nfe,
                    "solver_steps": steps,
                    "nfe": calls,
                    "sampling_seconds": round(seconds, 2),
                    "fid_in_domain": round(fid.value, 3),
                    "fid_floor": round(fid.floor, 3),
                    "fid_n": fid.n_real,
                    "lesion_contrast_own_masks": contrast["generated_own_masks"],
                    "lesion_contrast_shuffled_masks": contrast["generated_shuffled_masks"],
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report["models"] = models
    report["rows"] = rows
    report["seconds_total"] = round(time.perf_counter() - start, 1)
    report["machine_at_end"] = machine_info()
    print(json.dumps(report, indent=2))
    print(markdown_table(report))


def markdown_table(report: dict) -> str:
    lines = [
        "| strategy (sampler) | NFE target | steps | NFE | sampling s | in-domain FD (floor) "
        "| lesion contrast own / shuffled masks |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        own, shuffled = row["lesion_contrast_own_masks"], row["lesion_contrast_shuffled_masks"]
        lines.append(
            f"| {row['strategy']} ({row['sampler']}) | {row['nfe_target']} | {row['solver_steps']} "
            f"| {row['nfe']} | {row['sampling_seconds']} | {row['fid_in_domain']} "
            f"({row['fid_floor']}) | {own['mean']} / {shuffled['mean']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
