"""One training engine for every medgen training node.

    config = TrainingConfig.from_dict(params["training"])
    result = train(model, loss_fn, dataset, config, val_fn=..., checkpoint_dir=...)

Multi-process / multi-node: `launch(run_training_job, JobSpec(...), resources)`.
See docs/cluster.md.
"""

from medgen.training.callbacks import Callback, MlflowCallback, ProgressBar, save_loss_curve
from medgen.training.checkpoint import load_checkpoint, save_checkpoint
from medgen.training.config import TrainingConfig
from medgen.training.distributed import (
    JobSpec,
    Resources,
    get_rank,
    get_world_size,
    is_main_process,
    launch,
    run_training_job,
)
from medgen.training.engine import Trainer, TrainingResult, TrainingTask, seed_everything, train
from medgen.training.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    TrainingError,
)
from medgen.training.lr_finder import LRFinderResult, lr_range_test, plot_lr_range_test
from medgen.training.schedule import build_warmup_cosine_scheduler, warmup_cosine_multiplier

__all__ = [
    "Callback",
    "CheckpointError",
    "ConfigError",
    "JobSpec",
    "LRFinderResult",
    "MlflowCallback",
    "NonFiniteLossError",
    "ProgressBar",
    "Resources",
    "Trainer",
    "TrainingConfig",
    "TrainingError",
    "TrainingResult",
    "TrainingTask",
    "build_warmup_cosine_scheduler",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "launch",
    "load_checkpoint",
    "lr_range_test",
    "plot_lr_range_test",
    "run_training_job",
    "save_checkpoint",
    "save_loss_curve",
    "seed_everything",
    "train",
    "warmup_cosine_multiplier",
]
