import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist workers (`make test`) share the cores: at most two torch threads each, fewer where the
# workers' threads together would exceed the cores (two workers on two cores: one thread each)
workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def ctrl_c():
    """Python's own Ctrl-C handler for the test, whatever this process inherited: a command started in the
    background by a non-interactive shell (``make test &``, some CI runners) ignores SIGINT from the start."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)

