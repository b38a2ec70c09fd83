"""Kill a training process with SIGKILL mid-run, resume it in a new process, and
demand bitwise equality with an uninterrupted run of the same script."""

from __future__ import annotations

import signal

import resume_script
import torch

from medgen.training import load_checkpoint

TIMEOUT_S = 300


def _run(context, *args) -> int:
    process = context.Process(
        target=resume_script.main, args=tuple(str(a) if hasattr(a, "parent") else a for a in args)
    )
    process.start()
    process.join(TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()
        raise AssertionError(f"resume_script.main{args} did not finish in {TIMEOUT_S} s")
    return process.exitcode


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, forkserver):
    reference = forkserver.Process(
        target=resume_script.main, args=(str(tmp_path / "ref_ckpt"), str(tmp_path / "ref.pt"))
    )
    reference.start()  # runs alongside the process that gets killed

    assert _run(forkserver, tmp_path / "ckpt", tmp_path / "never.pt", 8) == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()
    # checkpoint_every=3: the newest complete checkpoint is step 6, mid-epoch
    # (5 optimizer steps per epoch), with the validation at step 4 behind it.
    assert load_checkpoint(tmp_path / "ckpt" / "latest.pt")["step"] == 6
    assert not list((tmp_path / "ckpt").glob("*.tmp"))

    # A fresh process that knows nothing but the checkpoint directory.
    assert _run(forkserver, tmp_path / "ckpt", tmp_path / "resumed.pt") == 0
    reference.join(TIMEOUT_S)
    assert reference.exitcode == 0

    ref = torch.load(tmp_path / "ref.pt", weights_only=True)
    res = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert ref["steps"] == res["steps"] == 14
    assert ref["model"].keys() == res["model"].keys()
    for key in ref["model"]:
        assert torch.equal(ref["model"][key], res["model"][key]), key
    for key in ref["ema"]:
        assert torch.equal(ref["ema"][key], res["ema"][key]), key
    # Logged losses, lrs and validation metrics continue exactly as well.
    assert ref["history"] == res["history"]
    assert [r["step"] for r in res["history"] if r["kind"] == "val"] == [4, 8, 12, 14]
