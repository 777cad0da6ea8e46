"""The two ways ``lmkit icl`` asks a model for log-likelihoods and greedy answers.

What this module owns: :class:`LocalLM` (a checkpoint in this process) and :class:`ServerLM` (any
OpenAI-compatible completions endpoint, ``lmkit serve`` included). Both answer the same three
questions, so :mod:`lmkit.lab.icl.run` does not know which it has:

* ``loglikelihood([(context, continuation), ...])`` -> ``[(sum of log P of the continuation's
  tokens, their count), ...]``. A decoder tokenises ``context + continuation`` as one text and
  splits at the token boundary (:func:`lmkit.lab.icl.score.split_at_boundary`); each token is
  scored given everything before it (the first token of the text has no score, as OpenAI's
  ``echo`` gives it none). The server is asked with ``echo: true, logprobs: 0, max_tokens: 0``
  and split at the same boundary by ``text_offset``. An encoder-decoder reads the context in its
  encoder and scores the answer (without the delimiter) plus EOS in its decoder.
* ``generate(prompts, max_new_tokens, separator)`` -> the greedy continuations.
* ``count(text)`` -> tokens in ``text`` (None when a server cannot say), and ``window``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from lmkit.errors import LmkitError
from lmkit.lab.icl.score import split_at_boundary


class LocalLM:
    """A decoder or encoder-decoder checkpoint held in this process."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8) -> None:
        from lmkit.models.registry import spec_of

        spec = spec_of(model.cfg.family)
        if not spec.generates:
            raise LmkitError(
                "an encoder (masked language model) does not continue a prompt: use `lmkit fill-mask` "
                "to query it, or `lmkit finetune-head` to train it on the labelled set"
            )
        self.model, self.tokenizer = model.eval(), tokenizer
        self.family: str = spec.name
        self.seq2seq = spec.decodes == "seq2seq"  # reads the context in its encoder, scores in its decoder
        self.window: int = model.cfg.max_seq_len
        self.batch_size = max(1, batch_size)
        self.name = "checkpoint"

    def count(self, text: str) -> int | None:
        return len(self.tokenizer.encode(text))

    def split(self, context: str, cont: str) -> tuple[list[int], int]:
        """Token ids of ``context + cont`` and how many of them are context: split where the bytes
        each token covers (``Tokenizer.encode_with_bytes``) pass the context's; BOS first where the
        model's tokenizer adds it (it belongs to the context)."""
        tok = self.tokenizer
        ids, pieces = tok.encode_with_bytes(context + cont)
        n_ctx = split_at_boundary(list(accumulate(len(p) for p in pieces)), len(context.encode("utf-8")))
        if tok.adds_bos:
            ids, n_ctx = [tok.bos_id, *ids], n_ctx + 1
        if n_ctx == 0:
            raise LmkitError(
                f"the context {context!r} is shorter than one token: nothing predicts the answer's first token"
            )
        return ids, n_ctx

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        import torch

        if self.seq2seq:
            return self._loglik_seq2seq(requests)
        items = [self.split(c, x) for c, x in requests]
        for ids, _ in items:
            if len(ids) > self.window:
                raise LmkitError(
                    f"a prompt and its answer are {len(ids)} tokens, over the context window of {self.window}"
                )
        # Each sequence is computed padded to its own width bucket (a power of two, at least 16, at most
        # the window), batched only with sequences of the same bucket: the numbers a sequence gets
        # depend on it alone, not on --batch-size or its neighbours (CPU kernels pick their blocking by
        # the matrix shape; a shape shared by all batchings gives identical bits).
        buckets: dict[int, list[int]] = {}
        for n, (ids, _) in enumerate(items):
            width = min(self.window, max(16, 1 << (len(ids) - 1).bit_length()))
            buckets.setdefault(width, []).append(n)
        out: list[tuple[float, int]] = [(0.0, 0)] * len(items)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for width, members in sorted(buckets.items()):
                for b in range(0, len(members), self.batch_size):
                    chunk = members[b : b + self.batch_size]
                    rows = [items[n][0] + [0] * (width - len(items[n][0])) for n in chunk]
                    logp = self.model(torch.tensor(rows, device=device)).float().log_softmax(-1)
                    for r, n in enumerate(chunk):  # causal: the padding on the right changes nothing before it
                        ids, n_ctx = items[n]
                        tgt = torch.tensor(ids[n_ctx:], device=device)
                        lp = logp[r, n_ctx - 1 : len(ids) - 1].gather(1, tgt[:, None])[:, 0].tolist()
                        total = 0.0
                        for v in lp:  # summed in order, in float64: the sum a client makes of echoed logprobs
                            total += v
                        out[n] = (total, len(lp))
        return out

    def _loglik_seq2seq(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        import torch

        tok, out = self.tokenizer, []
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for context, cont in requests:  # one at a time: an encoder-decoder pads its input otherwise
                src = list(tok.encode(context, allow_special=True)) + [tok.eos_id]
                tgt = list(tok.encode(cont.strip())) + [tok.eos_id]
                if len(src) > self.window:
                    raise LmkitError(f"a prompt is {len(src)} tokens, over the encoder's window of {self.window}")
                logits = self.model(
                    torch.tensor([src], device=device), torch.tensor([[tok.decoder_start_id] + tgt[:-1]], device=device)
                )
                lp = logits[0].float().log_softmax(-1).gather(1, torch.tensor(tgt, device=device)[:, None])[:, 0]
                total = 0.0
                for v in lp.tolist():
                    total += v
                out.append((total, len(tgt)))
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int, separator: str) -> list[str]:
        from lmkit.infer.sampling import GenerationConfig
        from lmkit.infer.text import generate

        cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
        out = []
        for p in prompts:
            text = generate(self.model, self.tokenizer, p, cfg).completion
            out.append(text.split(separator, 1)[0] if separator else text)
        return out


class ServerLM:
    """An OpenAI-compatible completions endpoint (``lmkit serve``, vLLM, ...) at ``url``."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        batch_size: int = 8,
        timeout: float = 120.0,
    ) -> None:
        import httpx

        self.base = url.rstrip("/")
        if self.base.endswith("/v1"):
            self.base = self.base[:-3]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)
        self.batch_size = max(1, batch_size)
        self.family = "decoder"
        info = self._get("/v1/models")
        data = info.get("data") or [{}]
        entry = next((d for d in data if d.get("id") == model), data[0]) if model else data[0]
        self.name: str = model or entry.get("id") or "model"
        self.window: int = int(entry.get("max_model_len") or 0) or 1 << 30
        from lmkit.models.registry import SPECS

        spec = SPECS.get(str(entry.get("family")), SPECS["decoder"])  # an endpoint that does not say: a causal LM
        if not spec.generates:
            raise LmkitError(f"--server {url} serves an encoder: use `lmkit fill-mask` or `lmkit finetune-head`")
        self.family = spec.name
        self.seq2seq = spec.decodes == "seq2seq"
        self._tokenize = True

    def _get(self, path: str) -> Any:
        import httpx

        try:
            r = self.http.get(path)
        except httpx.HTTPError as e:
            raise LmkitError(f"--server {self.base}: cannot reach it ({e})") from None
        if r.status_code != 200:
            raise LmkitError(f"--server {self.base}{path}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            r = self.http.post(path, json=body)
        except httpx.HTTPError as e:
            raise LmkitError(f"--server {self.base}: request failed ({e})") from None
        if r.status_code != 200:
            try:
                msg = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = r.text[:200]
            raise LmkitError(f"--server {self.base}{path}: HTTP {r.status_code}: {msg}")
        return r.json()

    def count(self, text: str) -> int | None:
        """Tokens of ``text`` by the server's ``/tokenize`` (lmkit serve, vLLM); None without one."""
        if not self._tokenize:
            return None
        try:
            return int(self._post("/tokenize", {"prompt": text})["count"])
        except (LmkitError, KeyError, TypeError, ValueError):
            self._tokenize = False
            return None

    def _complete(self, prompts: list[str], **kw: Any) -> list[dict[str, Any]]:
        res = self._post("/v1/completions", {"model": self.name, "prompt": prompts, "temperature": 0, **kw})
        choices = sorted(res.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise LmkitError(f"--server {self.base}: {len(choices)} choices for {len(prompts)} prompts")
        return choices

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        if self.seq2seq:
            raise LmkitError(
                "--server: an encoder-decoder server does not score its input (echo with logprobs); "
                "run the checkpoint in-process instead"
            )
        out: list[tuple[float, int]] = []
        for b in range(0, len(requests), self.batch_size):
            chunk = list(requests[b : b + self.batch_size])
            choices = self._complete([c + x for c, x in chunk], max_tokens=0, echo=True, logprobs=0)
            for (context, cont), ch in zip(chunk, choices):
                lp = ch.get("logprobs") or {}
                tokens, values, offsets = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
                if not tokens or values is None or offsets is None:
                    raise LmkitError(
                        f"--server {self.base}: no echoed logprobs (the endpoint must support echo with logprobs)"
                    )
                # a token ends where the next begins (BOS adds no text); SentencePiece's space before
                # the text's start shows in the echoed tokens but is no character of the text
                shift = int(offsets[-1] + len(tokens[-1]) == len(context + cont) + 1)
                ends = [max(0, e - shift) for e in [*offsets[1:], offsets[-1] + len(tokens[-1])]]
                n_ctx = split_at_boundary(ends, len(context))
                scored = values[n_ctx:]
                if n_ctx == 0 or any(v is None for v in scored):
                    raise LmkitError(
                        f"the context {context!r} is shorter than one token: nothing predicts the answer's first token"
                    )
                total = 0.0
                for v in scored:
                    total += float(v)
                out.append((total, len(scored)))
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int, separator: str) -> list[str]:
        out: list[str] = []
        for b in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[b : b + self.batch_size])
            choices = self._complete(chunk, max_tokens=max_new_tokens, stop=[separator] if separator else None)
            out.extend(str(c.get("text", "")).split(separator, 1)[0] for c in choices)
        return out
