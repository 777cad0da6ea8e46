"""Fixtures several test modules share."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and several test workers share the cores.

    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_worker() -> Iterator[None]:
    """Under pytest-xdist with a worker per core, each worker (and what it starts) runs torch on one
    thread: two workers of two threads each on two cores spin-wait on each other's cores."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or workers < (os.cpu_count() or 1):
        yield
        return
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="session", autouse=True)
def own_lmkit_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What lmkit measures about the machine (runtime baseline, past runs' memory) goes to a cache
    of the test session's own, so a developer's cache never changes a test's figures."""
    import os

    before = os.environ.get("LMKIT_CACHE")
    os.environ["LMKIT_CACHE"] = str(tmp_path_factory.mktemp("lmkit-cache"))
    yield
    if before is None:
        os.environ.pop("LMKIT_CACHE", None)
    else:
        os.environ["LMKIT_CACHE"] = before


@pytest.fixture
def word_corpus(tmp_path: Path) -> Path:
    """A plain-text file of 300 documents of random short phrases: enough to train a tiny model on."""
    rng = random.Random(0)
    words = ["the cat", "a dog", "sees", "likes", "the bird", "a red ball", "the river", "feeds"]
    path = tmp_path / "data" / "corpus.txt"
    path.parent.mkdir(parents=True)
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(60)) for _ in range(300)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def foundation_imports(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Tiny imported BERT, RoBERTa, Flan-T5 and BART with their own tokenizers (tests/foundation_models.py),
    each built once per session the first time a test asks for it: ``foundation_imports["bert"]``."""
    from foundation_models import Imports

    return Imports(tmp_path_factory)
