"""Fixtures for the training tests.

Multi-process tests (kill-and-resume, DDP) start their processes from one
multiprocessing *forkserver*: a fresh interpreter that imports torch once, and
forks a clean child for every process the tests need. Each child is a separate
process with no memory of the others' training (exactly what kill-and-resume must
prove), without paying torch's import time again per process.
"""

from __future__ import annotations

import multiprocessing

import pytest


@pytest.fixture(scope="session")
def forkserver():
    # torch._dynamo: the first optimizer imports it lazily, and it is slow to import.
    multiprocessing.set_forkserver_preload(
        ["torch", "torch._dynamo", "medgen.training", "training_tasks", "resume_script"]
    )
    return multiprocessing.get_context("forkserver")
