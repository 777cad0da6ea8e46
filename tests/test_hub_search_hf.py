"""``lmkit hub search --hf`` / ``hub show --hf`` against a stand-in for the Hugging Face hub.

A local ``http.server`` in a thread answers the routes huggingface_hub calls (read from its source:
``HfApi.list_models`` GETs ``/api/models`` with ``filter``, ``search``, ``pipeline_tag``,
``num_parameters``, ``sort``, ``limit`` and ``expand`` query parameters and builds a ``ModelInfo``
from each item; ``hf_hub_download`` HEADs then GETs ``/{repo}/resolve/{rev}/README.md``, reading
``X-Repo-Commit``, ``ETag`` and ``Content-Length``, and a 404's ``X-Error-Code``). The recorded
listing holds models lmkit imports and repositories of other classes (a Llama reward model, a BERT
sentence encoder), and HF_ENDPOINT points at the server. Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from lmkit.cli import main
from lmkit.models.hf import ADAPTERS
from lmkit.ship.hf_search import card_summary, count_bound

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _model(
    repo: str,
    model_type: str,
    arch: str,
    task: str,
    downloads: int,
    params: int | None,
    license: str | None,
    gated: Any = False,
) -> dict[str, Any]:
    """One item of /api/models as the hub sends it with every field ``expand`` can ask for."""
    tags = ["transformers", "safetensors" if params else "pytorch", model_type, task, "en", "region:us"]
    if license:
        tags.append(f"license:{license}")
    item: dict[str, Any] = {
        "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
        "id": repo,
        "author": repo.split("/")[0],
        "downloads": downloads,
        "likes": downloads // 1000,
        "pipeline_tag": task,
        "library_name": "transformers",
        "tags": tags,
        "gated": gated,
        "createdAt": "2024-10-31T13:41:10.000Z",
        "config": {
            "architectures": [arch],
            "model_type": model_type,
            "tokenizer_config": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"},
        },
        "cardData": {"library_name": "transformers", "language": ["en"], **({"license": license} if license else {})},
    }
    if params:
        item["safetensors"] = {"parameters": {"BF16": params}, "total": params}
    return item


MODELS = [
    _model(
        "HuggingFaceTB/SmolLM2-135M", "llama", "LlamaForCausalLM", "text-generation", 912_345, 134_515_008, "apache-2.0"
    ),
    _model(
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "llama",
        "LlamaForCausalLM",
        "text-generation",
        801_000,
        1_100_048_384,
        "apache-2.0",
    ),
    _model(
        "meta-llama/Llama-3.2-1B",
        "llama",
        "LlamaForCausalLM",
        "text-generation",
        2_100_000,
        1_235_814_400,
        "llama3.2",
        "manual",
    ),
    _model(
        "acme/llama-reward",
        "llama",
        "LlamaForSequenceClassification",
        "text-classification",
        5_000_000,
        1_235_814_400,
        "mit",
    ),
    _model(
        "google-bert/bert-base-uncased", "bert", "BertForMaskedLM", "fill-mask", 50_000_000, 110_106_428, "apache-2.0"
    ),
    _model(
        "sentence-transformers/all-MiniLM-L6-v2",
        "bert",
        "BertModel",
        "sentence-similarity",
        90_000_000,
        22_713_216,
        "apache-2.0",
    ),
    _model(
        "google/flan-t5-small",
        "t5",
        "T5ForConditionalGeneration",
        "text2text-generation",
        700_000,
        76_961_152,
        "apache-2.0",
    ),
    _model("EleutherAI/pythia-70m", "gpt_neox", "GPTNeoXForCausalLM", "text-generation", 300_000, None, "apache-2.0"),
    _model("openai-community/gpt2", "gpt2", "GPT2LMHeadModel", "text-generation", 9_000_000, 137_022_720, "mit"),
    _model(
        "mistralai/Mistral-7B-v0.1",
        "mistral",
        "MistralForCausalLM",
        "text-generation",
        400_000,
        7_241_732_096,
        "apache-2.0",
    ),
]

CARDS = {
    "HuggingFaceTB/SmolLM2-135M": """---
library_name: transformers
license: apache-2.0
language:
- en
---

# SmolLM2

## Model Summary

SmolLM2 is a family of compact language models available in three sizes: 135M, 360M, and 1.7B parameters.

## How to use

```bash
# install transformers first
pip install transformers
```

## Limitations

SmolLM2 models primarily understand and generate content in English. They can produce text on a variety of \
topics, but the generated content may not always be factually accurate, logically consistent, or free from \
biases present in the training data.
""",
    "google-bert/bert-base-uncased": """---
language: en
license: apache-2.0
---

# BERT base model (uncased)

## Intended uses & limitations

You can use the raw model for either masked language modeling or next sentence prediction, but it's mostly \
intended to be fine-tuned on a downstream task. See the [model hub](https://huggingface.co/models) to look for \
fine-tuned versions.

### How to use

```python
>>> from transformers import pipeline
# a comment, not a heading
```

### Limitations and bias

Even if the training data used for this model could be characterized as fairly neutral, this model can have \
**biased predictions**.
""",
    "google/flan-t5-small": "---\nlicense: apache-2.0\n---\n\n# Uses\n\n## Direct Use and Downstream Use\n\n"
    "The primary use is research on language models, including research on zero-shot NLP tasks.\n\n"
    "# Bias, Risks, and Limitations\n\n> Language models, including Flan-T5, can potentially be used for "
    "language generation in a harmful way.\n",
    "openai-community/gpt2": "---\nlicense: mit\n---\n\n# GPT-2\n\n## Intended uses & limitations\n\n"
    "You can use the raw model for text generation or fine-tune it to a downstream task.\n",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": "---\nlicense: apache-2.0\n---\n\n# TinyLlama\n\nA chat model.\n",
    "meta-llama/Llama-3.2-1B": "---\nlicense: llama3.2\n---\n\n# Llama 3.2\n\n## Intended Use\n\n"
    "Llama 3.2 is intended for commercial and research use in multiple languages.\n",
    # EleutherAI/pythia-70m has no README.md: its card cannot be read
}


class FakeHub(ThreadingHTTPServer):
    requests: list[tuple[str, str, dict[str, list[str]], dict[str, str]]]


class Handler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: Any) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _answer(self, body: bool) -> None:
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        self.server.requests.append((self.command, unquote(url.path), q, dict(self.headers)))
        if url.path == "/api/models":
            self._send(200, json.dumps(_listing(q)).encode(), {"Content-Type": "application/json"}, body)
            return
        m = re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", unquote(url.path))
        if m is None:
            self._send(404, b"Not Found", {"X-Error-Code": "RepoNotFound"}, body)
            return
        repo, _rev, filename = m.groups()
        if repo not in {x["id"] for x in MODELS}:
            self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, body)
            return
        if filename != "README.md" or repo not in CARDS:
            self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, body)
            return
        data = CARDS[repo].encode()
        etag = hashlib.sha1(data).hexdigest()
        headers = {"Content-Type": "text/plain; charset=utf-8", "ETag": f'"{etag}"', "X-Repo-Commit": COMMIT}
        self._send(200, data, headers, body)


def _count(text: str) -> float:
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    return float(text[:-1]) * mult[text[-1]] if text[-1] in mult else float(text)


def _listing(q: dict[str, list[str]]) -> list[dict[str, Any]]:
    """What the hub answers /api/models: every filter tag, search in the id, task, size bounds."""
    out = []
    for m in MODELS:
        if not all(f in m["tags"] for f in q.get("filter", [])):
            continue
        if "search" in q and q["search"][0].lower() not in m["id"].lower():
            continue
        if "pipeline_tag" in q and m["pipeline_tag"] != q["pipeline_tag"][0]:
            continue
        if "num_parameters" in q:
            total = (m.get("safetensors") or {}).get("total")
            bounds = dict(b.split(":") for b in q["num_parameters"][0].split(","))
            if total is None or ("min" in bounds and total < _count(bounds["min"])):
                continue
            if "max" in bounds and total > _count(bounds["max"]):
                continue
        out.append(m)
    if q.get("sort") == ["downloads"]:
        out.sort(key=lambda m: -m["downloads"])
    out = out[: int(q["limit"][0])] if "limit" in q else out
    keep = set(q.get("expand", []))
    return [{k: v for k, v in m.items() if k in {"_id", "id"} or k in keep} for m in out]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    server = FakeHub(("127.0.0.1", 0), Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def _search(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main(["hub", "search", "--hf", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_only_models_lmkit_imports_are_listed(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    found = _search(capsys)
    names = [m["name"] for m in found]
    assert names == [  # most downloaded first; the reward model and the sentence encoder are other classes
        "google-bert/bert-base-uncased",
        "openai-community/gpt2",
        "meta-llama/Llama-3.2-1B",
        "HuggingFaceTB/SmolLM2-135M",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "google/flan-t5-small",
        "EleutherAI/pythia-70m",
    ]
    smol = found[names.index("HuggingFaceTB/SmolLM2-135M")]
    assert smol["architecture"] == "LlamaForCausalLM" and smol["family"] == "decoder"
    assert (smol["params"], smol["downloads"], smol["license"], smol["task"]) == (
        134_515_008,
        912_345,
        "apache-2.0",
        "text-generation",
    )
    assert found[names.index("EleutherAI/pythia-70m")]["params"] is None  # no safetensors total: unknown
    assert found[names.index("meta-llama/Llama-3.2-1B")]["gated"] is True
    # one listing request per model_type of the adapters' registry, each asking for what the records need
    listings = [q for method, path, q, _ in hub.requests if path == "/api/models"]
    assert sorted(q["filter"][0] for q in listings) == sorted({a.target.model_type for a in ADAPTERS})
    for q in listings:
        assert {"config", "cardData", "safetensors", "downloads"} <= set(q["expand"])
        assert q["sort"] == ["downloads"] and q["limit"] == ["20"]


def test_filters_family_task_size_words_and_limit(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert [m["name"] for m in _search(capsys, "--family", "encoder")] == ["google-bert/bert-base-uncased"]
    sent = {q["filter"][0] for _, path, q, _ in hub.requests if path == "/api/models"}
    assert sent == {a.target.model_type for a in ADAPTERS if a.target.family == "encoder"}
    assert [m["name"] for m in _search(capsys, "--family", "encdec")] == ["google/flan-t5-small"]
    assert [m["name"] for m in _search(capsys, "--task", "text2text-generation")] == ["google/flan-t5-small"]
    small = _search(capsys, "--max-params", "135M")
    assert [m["name"] for m in small] == [
        "google-bert/bert-base-uncased",
        "HuggingFaceTB/SmolLM2-135M",
        "google/flan-t5-small",
    ]  # gpt2 has 137M; pythia's size is unknown, so no bound admits it
    assert all(m["params"] <= 135e6 for m in small)
    assert any(q.get("num_parameters") == ["max:135M"] for _, _, q, _ in hub.requests)
    big = _search(capsys, "--min-params", "1.1B", "--family", "decoder")
    assert [m["name"] for m in big] == ["meta-llama/Llama-3.2-1B", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"]
    assert any(q.get("num_parameters") == ["min:1100M"] for _, _, q, _ in hub.requests)
    assert [m["name"] for m in _search(capsys, "smol")] == ["HuggingFaceTB/SmolLM2-135M"]
    assert [m["name"] for m in _search(capsys, "google", "t5")] == ["google/flan-t5-small"]
    assert len(_search(capsys, "--limit", "2")) == 2
    assert _search(capsys, "--family", "decoder", "--task", "fill-mask") == []
    assert count_bound(1.1e9, up=True) == "1100M" and count_bound(1234.5, up=True) == "1235"


def test_cards_summarised_and_table_printed(hub: FakeHub, capsys: pytest.CaptureFixture[str]) -> None:
    found = {m["name"]: m for m in _search(capsys)}
    smol = found["HuggingFaceTB/SmolLM2-135M"]
    assert smol["limitations"].startswith("SmolLM2 models primarily understand and generate content in English.")
    assert smol["uses"] is None  # its "How to use" holds only code
    bert = found["google-bert/bert-base-uncased"]
    assert bert["uses"].startswith("You can use the raw model for either masked language modeling")
    assert bert["limitations"] == (
        "Even if the training data used for this model could be characterized as fairly neutral, this model can "
        "have biased predictions."
    )
    assert found["google/flan-t5-small"]["uses"].startswith("The primary use is research on language models")
    assert "harmful way" in found["google/flan-t5-small"]["limitations"]
    gpt2 = found["openai-community/gpt2"]  # "Intended uses & limitations" alone: said once
    assert gpt2["uses"].startswith("You can use the raw model for text generation") and gpt2["limitations"] is None
    assert "no README.md" in found["EleutherAI/pythia-70m"]["card_error"]
    assert main(["hub", "search", "--hf", "--family", "decoder"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "CLASS", "TASK", "PARAMS", "DOWNLOADS", "LICENSE"]
    row = next(line for line in out if line.startswith("HuggingFaceTB/SmolLM2-135M"))
    assert row.split() == [
        "HuggingFaceTB/SmolLM2-135M",
        "LlamaForCausalLM",
        "text-generation",
        "135",
        "M",
        "912",
        "k",
        "apache-2.0",
    ]
    assert any(line.startswith("meta-llama/Llama-3.2-1B (gated)") for line in out)
    assert any(line.strip().startswith("limitations: SmolLM2 models primarily") for line in out)
    assert any("card not read" in line and "pythia" in line for line in out)
    assert not any("bert" in line.lower() for line in out)


def test_token_sent_and_show_prints_the_card(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    assert main(["hub", "show", "--hf", "HuggingFaceTB/SmolLM2-135M"]) == 0
    assert capsys.readouterr().out == CARDS["HuggingFaceTB/SmolLM2-135M"]
    methods = [(method, path) for method, path, _, _ in hub.requests]
    assert ("GET", "/HuggingFaceTB/SmolLM2-135M/resolve/main/README.md") in methods
    assert all(h.get("authorization") == "Bearer hf_abcdefghijklmnop" for *_, h in hub.requests)
    assert main(["hub", "show", "--hf", "google-bert/bert-base-uncased@main", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["license"] == "apache-2.0" and card["card"] == CARDS["google-bert/bert-base-uncased"]
    assert card["uses"].startswith("You can use the raw model")
    for spec, words in (("nobody/nothing", "no such model"), ("EleutherAI/pythia-70m", "no README.md")):
        assert main(["hub", "show", "--hf", spec]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    # a card read once is in the hub cache: shown offline, with no request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    assert main(["hub", "show", "--hf", "HuggingFaceTB/SmolLM2-135M"]) == 0
    assert capsys.readouterr().out == CARDS["HuggingFaceTB/SmolLM2-135M"] and len(hub.requests) == n
    assert main(["hub", "show", "--hf", "openai-community/gpt2"]) == 2
    assert "not in the hub cache" in capsys.readouterr().err


def test_offline_and_bad_input_are_one_line(
    hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for argv, words in (
        (["family:decoder"], "--family"),
        (["--max-params", "lots"], "--max-params must be a number"),
        (["--min-params", "2B", "--max-params", "1B"], "above --max-params"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--hub", str(tmp_path / "h")], "give one of them"),
    ):
        assert main(["hub", "search", "--hf", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("LMKIT_HUB", str(tmp_path / "local-hub"))
    assert main(["hub", "search", "--task", "translation"]) == 2  # lmkit's own hub knows its three tasks
    assert "lmkit's hub knows" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["hub", "search", "--hf", "smol"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and len(err.strip().splitlines()) == 1
    assert hub.requests == []  # refused before asking
    # HF_HUB_OFFLINE set before huggingface_hub was imported (its constant) is obeyed the same way
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["hub", "search", "--hf"]) == 2
    assert capsys.readouterr().err.startswith("lmkit: error: hub search --hf asks the Hugging Face hub")
    assert hub.requests == []


def test_card_summary_reads_the_template_and_skips_code() -> None:
    template = """---
license: mit
---
# Model Card for acme/tiny

## Uses

<!-- Address questions around how the model is intended to be used. -->

### Direct Use

[More Information Needed]

### Downstream Use [optional]

Chat assistants for **English** text, see [the guide](https://example.com/guide).

### Out-of-Scope Use

[More Information Needed]

## Bias, Risks, and Limitations

[More Information Needed]

### Recommendations

Users should be made aware of the risks, biases and limitations of the model.

## How to Get Started with the Model

```python
## not a heading: Limitations are nowhere in this code
print("hello")
```
"""
    assert card_summary(template) == {
        "uses": "Chat assistants for English text, see the guide.",
        "limitations": "Users should be made aware of the risks, biases and limitations of the model.",
    }
    assert card_summary("# Just a title\n\nNothing about uses here.\n") == {"uses": None, "limitations": None}
    long = "## Limitations\n\n" + "This model is small. " * 30
    s = card_summary(long)["limitations"]
    assert s is not None and len(s) <= 200 and s.endswith("small.")
