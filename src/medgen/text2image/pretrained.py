"""The pretrained Stable Diffusion path: offline loading, a no-training baseline, and fine-tuning
(full UNet or LoRA) through medgen's one training job.

Weights are never downloaded at run time. `load_stable_diffusion` reads a diffusers folder
(``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
or the HuggingFace cache entry of a model id, and names what is missing and where to put it.
The NSFW safety checker is not loaded: it is made for natural photographs and would black out
false positives among MRI slices.

Fine-tuning is the standard Stable Diffusion objective (Rombach et al. 2022,
https://arxiv.org/abs/2112.10752) expressed with medgen's diffusion core: images (grayscale
repeated to RGB, resized to ``resolution``) are encoded by the frozen VAE,
``z0 = vae.encode(x).latent_dist.sample() · scaling_factor``; `DDPMStrategy` with the
pipeline's own schedule (``scaled_linear`` β from 0.00085 to 0.012 for SD 1.x, checked equal to
the pipeline scheduler's ᾱ within 1e-6) draws the timesteps and noise and gives the ε (or v)
MSE; the UNet is called as ``model(z_t, t, tokens=ids)`` (medgen's token contract, see
`medgen.text2image.network`), with ``encoder_hidden_states`` from the frozen CLIP text encoder
on the ids of the pipeline's own CLIP tokenizer. The all-zeros null condition (caption dropout)
is read as the empty prompt ``""``. Trained: the whole UNet, or only LoRA adapters (Hu et al.
2021, https://arxiv.org/abs/2106.09685) on its attention projections. Checkpoints and results
hold the trained parameters only.

Size: one pretrained model family end to end (offline loading and its error messages, the
baseline, and the fine-tuning job: its module with trained-only state dicts, loss, data and
factory) sharing the folder resolution and the schedule check; the fine-tuning half is the
natural module to split off when it grows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medgen.datasets import TensorBundle
from medgen.diffusion import DDPMStrategy
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job
from medgen.training.results import sub_state_dict

STABLE_DIFFUSION_V1_5 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
PIPELINE_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
#: diffusers ``beta_schedule`` → MONAI ``NoiseSchedules`` name used by `DDPMStrategy`.
SCHEDULES = {"scaled_linear": "scaled_linear_beta", "linear": "linear_beta"}


class PretrainedModelNotFoundError(FileNotFoundError):
    """Stable Diffusion weights are not on this machine (nothing is downloaded at run time)."""


def _where_to_put_it(model: str, cache_dir: str | Path | None, folder: Path | None) -> str:
    """How to provide ``model``: a diffusers folder at ``folder`` (a path was given) or the
    HuggingFace cache entry of the hub id."""
    from huggingface_hub.constants import HF_HUB_CACHE

    hub_id = STABLE_DIFFUSION_V1_5 if folder is not None else model
    cache = Path(cache_dir or HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
    parts = ", ".join(PIPELINE_PARTS)
    online = "on a machine with internet: `huggingface-cli download"
    where = (
        f"Put a diffusers folder holding {parts} at {folder} ({online} {hub_id} --local-dir "
        f"{folder}`), or use the hub id {hub_id!r} with its cache entry at {cache}."
        if folder is not None
        else f"Put its cache entry at {cache} ({online} {hub_id}`, then copy that folder), or "
        f"pass the path of a local diffusers folder holding {parts}."
    )
    return (
        f"{where} The old id 'runwayml/stable-diffusion-v1-5' was removed from the hub; Stable "
        f"Diffusion 1.5 is now {STABLE_DIFFUSION_V1_5!r}."
    )


def resolve_pretrained_folder(model: str, cache_dir: str | Path | None = None) -> Path:
    """The local diffusers folder of ``model`` (a folder path or a cached hub id), offline;
    `PretrainedModelNotFoundError` naming what is missing and where to put it."""
    path = Path(model).expanduser()
    if not path.is_dir():
        looks_like_path = path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1
        if looks_like_path:
            raise PretrainedModelNotFoundError(
                f"Stable Diffusion folder {path} does not exist. "
                f"{_where_to_put_it(model, cache_dir, path)}"
            )
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(model, local_files_only=True, cache_dir=cache_dir))
        except (LocalEntryNotFoundError, OSError, ValueError) as exc:
            raise PretrainedModelNotFoundError(
                f"{model!r} is not in the HuggingFace cache and nothing is downloaded at run "
                f"time ({type(exc).__name__}). {_where_to_put_it(model, cache_dir, None)}"
            ) from exc
    missing = [part for part in PIPELINE_PARTS if not (path / part).exists()]
    if missing:
        raise PretrainedModelNotFoundError(
            f"Stable Diffusion folder {path} lacks {', '.join(missing)}. "
            f"{_where_to_put_it(model, cache_dir, path)}"
        )
    return path


def load_stable_diffusion(
    model: str = STABLE_DIFFUSION_V1_5,
    *,
    local_files_only: bool = True,
    torch_dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
):
    """``StableDiffusionPipeline.from_pretrained`` without the safety checker.

    ``model``: a hub id (default Stable Diffusion 1.5) or a local diffusers folder;
    ``local_files_only`` (default True): never download, and raise
    `PretrainedModelNotFoundError` naming the missing folder or parts and where to put them.
    """
    from diffusers import StableDiffusionPipeline

    source = str(resolve_pretrained_folder(model, cache_dir)) if local_files_only else model
    return StableDiffusionPipeline.from_pretrained(
        source,
        local_files_only=local_files_only,
        dtype=torch_dtype,  # diffusers 0.42 renamed torch_dtype (deprecated) to dtype
        cache_dir=cache_dir,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def to_best_device(pipe):
    """``pipe`` on the GPU when there is one (generation only; training jobs place their own
    model)."""
    return pipe.to("cuda") if torch.cuda.is_available() else pipe


def baseline_generation(
    pipe,
    prompts: Sequence[str],
    *,
    num_images_per_prompt: int,
    num_inference_steps: int,
    guidance_scale: float,
    height: int,
    width: int,
    seed: int,
    progress: bool = False,
) -> torch.Tensor:
    """Images ``[len(prompts) · num_images_per_prompt, 3, height, width]`` in [-1, 1] from the
    pretrained pipeline as it is (the no-training baseline), prompt-major order; the noise is
    drawn on the CPU with ``seed``, so a seed gives the same images on any device."""
    pipe.set_progress_bar_config(disable=not progress)
    images = pipe(
        prompt=[str(p) for p in prompts],
        num_images_per_prompt=num_images_per_prompt,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        height=height,
        width=width,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pt",
    ).images
    return (images.float().cpu() * 2 - 1).clamp(-1, 1)


def strategy_for_scheduler(
    scheduler_config: Mapping[str, Any], cond_drop_prob: float = 0.0
) -> DDPMStrategy:
    """`DDPMStrategy` training with the pipeline scheduler's noise schedule and prediction type;
    ValueError unless its ᾱ equal the diffusers ``DDPMScheduler``'s within 1e-6."""
    from diffusers import DDPMScheduler

    config = dict(scheduler_config)
    beta_schedule = config.get("beta_schedule")
    if beta_schedule not in SCHEDULES or config.get("trained_betas") is not None:
        raise ValueError(
            f"scheduler beta_schedule={beta_schedule!r} (trained_betas: "
            f"{config.get('trained_betas') is not None}) has no medgen DDPMStrategy equivalent; "
            f"supported: {sorted(SCHEDULES)}"
        )
    strategy = DDPMStrategy(
        num_train_timesteps=int(config["num_train_timesteps"]),
        schedule=SCHEDULES[beta_schedule],
        schedule_args={"beta_start": config["beta_start"], "beta_end": config["beta_end"]},
        prediction_type=config.get("prediction_type", "epsilon"),
        clip_sample=False,  # latent space
        cond_drop_prob=cond_drop_prob,
    )
    reference = DDPMScheduler.from_config(config).alphas_cumprod
    gap = (strategy.alphas_cumprod.double() - reference.double()).abs().max().item()
    if gap > 1e-6:
        raise ValueError(
            f"DDPMStrategy's alphas_cumprod differ from the pipeline scheduler's by {gap:.2e} "
            f"(options {config}); e.g. rescale_betas_zero_snr is not supported"
        )
    return strategy


class StableDiffusionDenoiser(nn.Module):
    """Frozen VAE and CLIP text encoder + the UNet being fine-tuned, as one module.

    ``forward(z_t, timesteps, tokens=None)``: the UNet's prediction given CLIP token ids
    ``[B, L]`` (all-zeros rows and None: the empty prompt). `encode_images` gives the scaled
    latents of images in [-1, 1]. `state_dict` holds only the trained parameters (UNet or LoRA
    adapters); loading fills the frozen rest from the module itself.
    """

    def __init__(
        self,
        vae: nn.Module,
        text_encoder: nn.Module,
        unet: nn.Module,
        empty_prompt: torch.Tensor,
        resolution: int,
    ) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.text_encoder = text_encoder.requires_grad_(False).eval()
        self.unet = unet
        self.resolution = int(resolution)
        self.register_buffer("empty_prompt", empty_prompt.long().clone(), persistent=False)
        self._full_state = False
        # Plain functions, not bound methods: torch marks public hooks with an attribute, and a
        # deep copy (EMA) of the module must keep hooks that act on the copy.
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_fill_frozen)

    def trained_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def train(self, mode: bool = True) -> StableDiffusionDenoiser:
        super().train(mode)
        self.vae.eval()
        self.text_encoder.eval()
        return self

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (a posterior sample) of ``images`` ``[B, 1 or 3, H, W]`` in
        [-1, 1], resized to ``resolution``."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if tuple(images.shape[2:]) != (self.resolution, self.resolution):
            images = F.interpolate(
                images.float(), size=(self.resolution,) * 2, mode="bilinear", antialias=True
            )
        vae_dtype = next(self.vae.parameters()).dtype
        latents = self.vae.encode(images.to(vae_dtype)).latent_dist.sample()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    def encode_prompts(self, tokens: torch.Tensor | None, batch: int) -> torch.Tensor:
        empty = self.empty_prompt
        if tokens is None:
            tokens = empty.expand(batch, -1)
        tokens = tokens.to(device=empty.device, dtype=torch.long)
        null = (tokens == 0).all(dim=1, keepdim=True)
        ids = torch.where(null, empty.expand_as(tokens), tokens)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = (ids != self.text_encoder.config.pad_token_id).long()
        with torch.no_grad():
            return self.text_encoder(ids, attention_mask=mask)[0]

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.encode_prompts(tokens, x.shape[0]).to(x.dtype)
        return self.unet(x, timesteps, encoder_hidden_states=hidden).sample


def _drop_frozen(module: StableDiffusionDenoiser, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook: keep only the trained parameters."""
    if module._full_state:
        return
    trained = module.trained_names()
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if key[len(prefix) :] not in trained:
            del state_dict[key]


def _fill_frozen(module: StableDiffusionDenoiser, state_dict, prefix, *args) -> None:
    """Load pre-hook: the frozen entries a trained-only state dict lacks, from the module."""
    module._full_state = True
    try:
        full = module.state_dict(keep_vars=True)
    finally:
        module._full_state = False
    trained = module.trained_names()
    for name, value in full.items():
        if name not in trained:
            state_dict.setdefault(prefix + name, value.detach())


def add_lora(unet: nn.Module, rank: int, alpha: float | None = None) -> nn.Module:
    """Freeze ``unet`` and add LoRA adapters (peft, through diffusers' ``add_adapter``) of
    ``rank`` (``alpha``: default ``rank``) to its attention projections."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=int(rank),
            lora_alpha=float(alpha if alpha is not None else rank),
            init_lora_weights="gaussian",
            target_modules=list(LORA_TARGET_MODULES),
        )
    )
    return unet


class CaptionedImages(Dataset):
    """``{"images": [C, S, S], "tokens": [L]}`` items of a staged bundle."""

    def __init__(self, bundle: TensorBundle) -> None:
        self.images, self.tokens = bundle["images"], bundle["tokens"]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"images": self.images[index], "tokens": self.tokens[index]}


class StableDiffusionLoss:
    """``loss_fn(model, batch)``: the strategy's loss on the VAE latents of ``batch["images"]``
    given ``batch["tokens"]`` (``model`` may be DDP- or compile-wrapped)."""

    def __init__(self, strategy: DDPMStrategy) -> None:
        self.strategy = strategy

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        net = model
        while not isinstance(net, StableDiffusionDenoiser):  # DDP: .module, compile: ._orig_mod
            net = net.module if hasattr(net, "module") else net._orig_mod
        latents = net.encode_images(batch["images"])
        return self.strategy.training_loss(model, latents, batch["tokens"])


def clip_tokens(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """The pipeline's own tokenisation of ``prompts`` (as ``encode_prompt`` does), int64."""
    return tokenizer(
        [str(p) for p in prompts],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.long()


def build_sd_finetune_task(
    data: Mapping[str, TensorBundle],
    *,
    pretrained: str,
    lora_rank: int | None,
    seed: int,
    resolution: int,
    lora_alpha: float | None = None,
    cond_drop_prob: float = 0.1,
    cache_dir: str | None = None,
) -> TrainingTask:
    """The job's factory, run in every worker: the pipeline loaded offline, its UNet trained
    whole (``lora_rank`` None) or through LoRA adapters seeded with ``seed``, on
    ``data["images"]`` (``images`` [N, C, S, S] in [-1, 1], ``tokens`` [N, L] CLIP ids)."""
    pipe = load_stable_diffusion(pretrained, local_files_only=True, cache_dir=cache_dir)
    torch.manual_seed(seed)
    unet = pipe.unet if lora_rank is None else add_lora(pipe.unet, lora_rank, lora_alpha)
    model = StableDiffusionDenoiser(
        pipe.vae, pipe.text_encoder, unet, clip_tokens(pipe.tokenizer, [""])[0], resolution
    )
    strategy = strategy_for_scheduler(pipe.scheduler.config, cond_drop_prob)
    return TrainingTask(
        model=model,
        loss_fn=StableDiffusionLoss(strategy),
        train_data=CaptionedImages(data["images"]),
    )


def _folder_fingerprint(folder: Path) -> str:
    """Configs and weight-file sizes of a diffusers folder: which model the checkpoints belong
    to, without hashing gigabytes."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        small = path.suffix in {".json", ".txt"}
        digest.update(
            rel.encode() + (path.read_bytes() if small else str(path.stat().st_size).encode())
        )
    return digest.hexdigest()[:16]


def finetune_stable_diffusion(
    images: TensorBundle,
    *,
    pretrained: str,
    training: Mapping[str, Any],
    lora_rank: int | None,
    checkpoint_dir: str | Path | None,
    text_key: str = "texts",
    resolution: int | None = None,
    lora_alpha: float | None = None,
    cond_drop_prob: float = 0.1,
    cache_dir: str | Path | None = None,
    resources: Mapping[str, Any] | None = None,
    resume: bool = True,
    torch_threads: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fine-tune ``pretrained`` on ``images`` (``images`` [N, 1 or 3, S, S] in [-1, 1], captions
    in ``metadata[text_key]``) through the one training job; ``(trained state dict, report)``.

    The state dict holds the trained parameters only, keyed ``unet.…`` (EMA weights when
    ``training`` has ``ema_decay``): the whole UNet, or its LoRA adapters; apply it with
    `apply_finetuned_weights`. ``resolution``: training image side (default the UNet's native
    one, 512 for SD 1.5).
    """
    from transformers import CLIPTokenizer

    config = TrainingConfig.from_dict(training)
    pixels = images["images"]
    texts = list(images.metadata.get(text_key) or [])
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3) or pixels.shape[2] != pixels.shape[3]:
        raise ValueError(f"images must be [N, 1 or 3, S, S], got {tuple(pixels.shape)}")
    if len(texts) != pixels.shape[0]:
        raise ValueError(
            f"metadata[{text_key!r}] has {len(texts)} captions for {pixels.shape[0]} images"
        )
    if not torch.isfinite(pixels).all() or pixels.abs().max() > 1 + 1e-4:
        raise ValueError("images must be finite and in [-1, 1]")
    folder = resolve_pretrained_folder(pretrained, cache_dir)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    if resolution is None:
        resolution = unet_config["sample_size"] * 2 ** (len(vae_config["block_out_channels"]) - 1)
    bundle = TensorBundle({"images": pixels.float(), "tokens": clip_tokens(tokenizer, texts)})
    mode = "full" if lora_rank is None else "lora"
    outcome = run_job(
        TrainingJob(
            name=f"stable_diffusion_{mode}",
            factory=build_sd_finetune_task,
            config=config,
            checkpoint_dir=checkpoint_dir,
            data={"images": bundle},
            options={
                "pretrained": str(pretrained),
                "lora_rank": lora_rank,
                "lora_alpha": lora_alpha,
                "seed": config.seed,
                "resolution": int(resolution),
                "cond_drop_prob": float(cond_drop_prob),
            },
            runtime_options={"cache_dir": None if cache_dir is None else str(cache_dir)},
            identity={"pretrained_files": _folder_fingerprint(folder)},
            resources=resources,
            torch_threads=torch_threads,
            resume=resume,
            artifact_path=f"text2image/stable_diffusion_{mode}",
        )
    )
    result = outcome.result
    state = result.ema_state or result.model_state
    losses = [r["loss"] for r in result.history if r.get("kind") == "step"]
    report = {
        "pretrained": str(pretrained),
        "trained": mode,
        "lora_rank": lora_rank,
        "lora_alpha": None
        if lora_rank is None
        else (lora_rank if lora_alpha is None else lora_alpha),
        "trained_parameters": int(sum(t.numel() for t in state.values())),
        "resolution": int(resolution),
        "images": int(pixels.shape[0]),
        "steps": int(result.steps),
        "final_loss": losses[-1] if losses else None,
        "loss_history": losses,
        "resumed_from_step": int(outcome.resumed_from_step),
        "skipped": bool(outcome.skipped),
        "seconds": float(outcome.seconds),
        "objective": "SD noise-prediction MSE on VAE latents via medgen DDPMStrategy",
    }
    return state, report


def apply_finetuned_weights(
    pipe,
    state: Mapping[str, torch.Tensor],
    *,
    lora_rank: int | None,
    lora_alpha: float | None = None,
):
    """``pipe`` with the fine-tuned UNet weights of `finetune_stable_diffusion` (LoRA: adapters
    added first, with the same rank and alpha); every key must fit."""
    load_finetuned_unet(pipe.unet, state, lora_rank=lora_rank, lora_alpha=lora_alpha)
    return pipe


def load_finetuned_unet(
    unet: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    lora_rank: int | None,
    lora_alpha: float | None = None,
) -> nn.Module:
    """`apply_finetuned_weights` on the UNet itself."""
    unet_state = sub_state_dict(state, "unet.")
    if len(unet_state) != len(state):
        raise ValueError("fine-tuned state has keys outside 'unet.'")
    if lora_rank is None:
        unet.load_state_dict(unet_state)
        return unet
    add_lora(unet, lora_rank, lora_alpha)
    result = unet.load_state_dict(unet_state, strict=False)
    lora_keys = {k for k in unet.state_dict() if "lora_" in k}
    if result.unexpected_keys or lora_keys - set(unet_state):
        raise ValueError(
            f"LoRA state does not fit the UNet: unexpected {result.unexpected_keys[:3]}, "
            f"missing {sorted(lora_keys - set(unet_state))[:3]}"
        )
    return unet
