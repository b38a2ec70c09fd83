"""One intra-op torch thread for tests of small networks.

On a shared 2-core machine two threads oversubscribe the cores and made tiny-network
training several times slower; one thread is also bitwise reproducible. A folder's
conftest opts in with ``from tests.torch_threads import single_torch_thread``.
Module scope: the setting is restored before the next test module, so it never leaks
into tests of other folders.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
