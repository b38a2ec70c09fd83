from __future__ import annotations

import math

import pytest
import torch
from training_tasks import mlp, mse_loss, regression_data

from medgen.training import TrainingConfig, build_warmup_cosine_scheduler, train

LR, WARMUP, TOTAL, RATIO = 0.5, 4, 21, 0.1


def closed_form(step: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / (TOTAL - WARMUP - 1)
    return LR * (RATIO + (1 - RATIO) * (1 + math.cos(math.pi * progress)) / 2)


def test_scheduler_matches_closed_form_and_landmarks():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = build_warmup_cosine_scheduler(optimizer, WARMUP, TOTAL, RATIO)
    lrs = []
    for _ in range(TOTAL):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([closed_form(s) for s in range(TOTAL)], rel=1e-12)
    # Landmarks that do not depend on the formula above.
    assert lrs[0] == pytest.approx(LR / 4)
    assert lrs[3] == lrs[4] == pytest.approx(LR)  # end of warmup, then the cosine peak
    assert lrs[12] == pytest.approx(LR * (RATIO + (1 - RATIO) / 2))  # half-way down
    assert lrs[-1] == pytest.approx(LR * RATIO)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def test_engine_uses_the_schedule_step_by_step():
    config = TrainingConfig(
        max_steps=TOTAL,
        lr=LR,
        warmup_steps=WARMUP,
        min_lr_ratio=RATIO,
        batch_size=4,
        log_every=1,
        progress=False,
        device="cpu",
    )
    result = train(mlp(), mse_loss, regression_data(16), config)
    logged = [r["lr"] for r in result.history if r["kind"] == "step"]
    assert logged == pytest.approx([closed_form(s) for s in range(TOTAL)], rel=1e-12)
