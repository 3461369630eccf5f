"""Shared fixtures: the repository root on sys.path (pytest.ini), the read-only ../shared material, and a
tiny GPT-2 saved by transformers."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# The models in tests are tiny: one thread runs them fastest, and stays fast when the machine is busy
# (with several threads on a loaded 2-core machine, small kernels wait on each other).
torch.set_num_threads(1)
# Compile caches and the record of measured speeds (speed.py) of this test session only, so
# that no test depends on what earlier runs on this machine measured (subprocesses inherit it)
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="smallgpt-tests-inductor-")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip, saying why, on a machine without a CUDA GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here); python -m tools.gpu_check runs these on one")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same torch random state: its random weights and data are the same each run."""
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, present in this workplace and its CI; a user's clone has none, so skip with a reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (it exists only in the project's own workplace)")
    return SHARED_DATA


@pytest.fixture
def gpt2_rank_file(shared_data: Path) -> Path:
    """OpenAI's GPT-2 BPE ranks (tiktoken's 'gpt2'), which tiktoken cannot download here."""
    path = shared_data / "r50k_base.tiktoken"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def hf_gpt2(tmp_path, gpt2_rank_file) -> Path:
    """A tiny random GPT-2 with GPT-2's vocabulary (a context of 32), saved by transformers."""
    transformers = pytest.importorskip("transformers", reason="transformers is a test dependency")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2-tiny")
    return tmp_path / "gpt2-tiny"
