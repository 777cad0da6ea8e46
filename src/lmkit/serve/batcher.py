"""Dynamic batching over the KV cache: the engine that decodes every request of ``lmkit serve``.

One engine thread owns the model. Each request's choice is a :class:`Job`. New jobs' prompts are
read first (the "prefill", which fills a key/value cache and gives the log-probabilities of the
prompt's own tokens for ``echo``; prompts of the same length together); each job's first token is
chosen, and its cache row then joins the running batch. Every decode step feeds the latest token of
all running rows at once, each at its own position (rows of different lengths side by side, in a
pool of request slots: :mod:`lmkit.serve.rows`, through the packed decode step of ``lmkit
generate`` wherever it takes the model), so eight concurrent requests cost about one step, not
eight. A new row is copied into the next free slot; a finished or cancelled row leaves between
steps and the last running row takes its slot, so the running rows stay at the front.

Each job chooses its tokens with its own ``torch.Generator`` and its own settings, from its own
row of logits, so its output does not depend on what else is in the batch. Log-probabilities are
those of the model's own distribution (before temperature, top-k and top-p), which is what an
evaluation harness scores. Encoder-decoder jobs join one batch too (:mod:`lmkit.serve.seq2seq`:
each prompt encoded alone, its cross-attention masked to its own length); their first decoder
input is the decoder start token, fed in the batch's next step.

Events go back to the web app through ``job.emit`` (thread-safe); the queue of waiting jobs is
bounded (:class:`QueueFull`), and so is the batch, so memory is bounded whatever clients send.

One request cannot stop the others: a job whose settings or step fail ends with an "error" event
(to its client only) and the engine goes on with the rest; a failed batched forward pass ends the
rows that were in it. Should the engine thread itself ever end other than by :meth:`Engine.close`,
it records why (:attr:`Engine.failure`, which ``/health`` reports), every job it held or that was
waiting gets an "error" event, and :meth:`Engine.submit` refuses new jobs (:class:`EngineStopped`):
no request waits on an engine that is gone.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from lmkit.infer.sampling import GenerationConfig, StepExplanation, choose_next, make_generator, within_vocabulary
from lmkit.models import LanguageModel
from lmkit.models.decoder import Decoder
from lmkit.models.encdec import EncoderDecoder
from lmkit.models.registry import FamilySpec, spec_of
from lmkit.serve.rows import DecoderRows, decoder_rows
from lmkit.serve.seq2seq import Seq2SeqRows
from lmkit.serve.stream import TextStream

LOG = logging.getLogger("lmkit.serve")


class QueueFull(Exception):
    """Raised by :meth:`Engine.submit` when the waiting queue cannot take the jobs."""


class EngineStopped(Exception):
    """Raised by :meth:`Engine.submit` when the engine thread is no longer running."""


@dataclass
class TokenInfo:
    """One token of a completion (or of an echoed prompt) with its log-probability."""

    token_id: int
    logprob: float | None  # None for the first prompt token (nothing predicts it)
    top: list[tuple[int, float]] | None = None  # the most likely alternatives at that position
    explain: StepExplanation | None = None  # with ``explain``: candidates before/after the settings


@dataclass
class Event:
    """What a job reports: ``kind`` is "prompt" (echoed prompt tokens), "token" (a new token and
    the text it released), "done" (with ``finish_reason`` "stop" or "length") or "error" (``text``
    says why; ``finish_reason`` "engine_stopped" when the engine itself stopped). A job's last event
    is "done" or "error", exactly once."""

    kind: str
    tokens: list[TokenInfo] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


@dataclass
class Job:
    """One completion to produce: a prompt (token ids), settings, and where to report."""

    prompt_ids: list[int]
    max_tokens: int
    settings: GenerationConfig
    emit: Callable[[Event], None]
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # alternatives per token; 0 = only the chosen token's log-probability
    echo: bool = False
    explain: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    # filled in by the engine
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    text: TextStream | None = None
    pending: int = -1  # the token chosen last, not yet fed to the model
    steps: int = 0  # tokens produced (the disconnect test reads it)
    ended: bool = False  # its last event ("done" or "error") was sent: nothing more is


def token_text_bytes(tokenizer: Any, token_id: int, plain_specials: set[int]) -> bytes:
    """Bytes a generated token adds to the text: none for pad/BOS/EOS, the text of other specials."""
    return b"" if token_id in plain_specials else tokenizer.token_bytes(token_id)


class Engine:
    """The model, its tokenizer, a bounded queue and the decode thread. ``submit`` jobs, ``close``."""

    def __init__(self, model: LanguageModel, tokenizer: Any, max_batch: int = 16, max_queue: int = 64) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.family: str = model.cfg.family
        self.spec: FamilySpec = spec_of(self.family)  # what the engine asks of the family
        self.window: int = model.cfg.max_seq_len
        self.vocab: int = tokenizer.vocab_size  # rows past it (an imported model's padding) are never chosen
        self.max_batch = max(1, max_batch)
        self.max_queue = max_queue
        # special tokens that add no text: all of them for a causal LM (as `lmkit generate` prints it);
        # a seq2seq model's sentinels say which gap a span fills, so only pad/BOS/EOS are dropped
        causal = self.spec.decodes == "causal"
        plain = tokenizer.special_ids if causal else (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
        self.plain = {int(i) for i in plain if i is not None and i >= 0}
        self._waiting: deque[Job] = deque()
        self._cv = threading.Condition()
        self._rows: list[Job] = []  # running jobs, one per row of self._pool
        self._pool: DecoderRows | Seq2SeqRows | None = None  # made when the first job joins
        # how far a seq2seq model's output may go: BART's learned positions (T5: no bound)
        seq2seq = self.spec.decodes == "seq2seq"
        self._positions = cast(EncoderDecoder, model).decoder.pos_emb if seq2seq else None
        self._closed = False
        self._starting: list[Job] = []  # taken from the queue, not yet in a batch
        self.failure: str | None = None  # why the engine thread stopped, if it did without close()
        self.stats = {"steps": 0, "batched_rows": 0, "finished": 0, "cancelled": 0, "failed": 0}
        self._thread = threading.Thread(target=self._run, name="lmkit-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the web app's side

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs (all or none); raises :class:`QueueFull` when the queue is at its bound."""
        with self._cv:
            if self.failure is not None or self._closed:
                raise EngineStopped(f"the engine has stopped: {self.failure or 'closed'}")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (at most {self.max_queue})")
            self._waiting.extend(jobs)
            self._cv.notify()

    def busy(self) -> dict[str, int]:
        """Jobs running and waiting, and totals since start (``failed``: jobs ended by an error)."""
        with self._cv:
            running = len({id(j) for j in self._in_flight()})  # taken from the queue, not yet ended
            return {"running": running, "waiting": len(self._waiting), **self.stats}

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=10)

    @torch.no_grad()
    def next_token_logits(self, prompt_ids: list[int]) -> torch.Tensor:
        """Logits (V,) of the token after ``prompt_ids`` (for the playground's explain view), over the
        tokenizer's ids only. Runs on the caller's thread; the model's weights are only read."""
        ids = torch.tensor([prompt_ids], dtype=torch.long)
        if self.spec.decodes == "seq2seq":
            model = cast(EncoderDecoder, self.model)  # the seq2seq family's class
            enc = model.encode(ids)
            start = torch.full((1, 1), self.tokenizer.decoder_start_id, dtype=torch.long)
            return within_vocabulary(model.logits(model.decode(start, enc)[:, -1])[0], self.vocab)
        return within_vocabulary(self.model(ids)[0, -1], self.vocab)

    # ------------------------------------------------------------------ the engine thread

    def _run(self) -> None:
        """The engine thread: serve until closed. A failure no job-level guard caught ends the jobs in
        flight, not the thread; should the thread end anyway, nothing is left waiting on it."""
        try:
            with torch.inference_mode():  # leaner than no_grad: no version counters, no views tracked
                while self._serve_once():
                    pass
        except BaseException as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            LOG.critical("the engine thread stopped", exc_info=True)
        finally:
            with self._cv:
                if not self._closed and self.failure is None:
                    self.failure = "the engine thread ended"
                left = [*self._waiting, *self._in_flight()]
                self._waiting.clear()
            for job in left:
                self._fail(job, f"the engine has stopped: {self.failure or 'closed'}", "engine_stopped")

    def _serve_once(self) -> bool:
        """Start waiting jobs, then one decode step; False once closed."""
        with self._cv:
            while not self._closed and not self._waiting and not self._rows:
                self._cv.wait()
            if self._closed:
                return False
            room = self.max_batch - len(self._rows)
            self._starting = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        try:
            self._start_all(self._starting)
            self._starting = []
            if self._rows:
                self._step_batch()
        except Exception as exc:  # not one job's fault that a guard could pin: end all in flight, go on
            LOG.exception("decode step failed")
            for job in self._in_flight():
                self._fail(job, exc)
            self._starting, self._rows, self._pool = [], [], None
        return True

    def _in_flight(self) -> list[Job]:
        return [*self._starting, *self._rows]

    def _guarded(self, job: Job, fn: Callable[[Job], None]) -> None:
        """Run fn(job); a failure ends that job (reported in the log and to its client), not the engine."""
        try:
            fn(job)
        except Exception as exc:  # a bug must not take down every other request
            LOG.exception("generation failed")
            self._drop(job)
            self._fail(job, exc)

    def _fail(self, job: Job, why: BaseException | str, reason: str | None = None) -> None:
        """End a job with an "error" event (once: a job that has ended already is left alone)."""
        if job.ended:
            return
        job.ended = True
        self.stats["failed"] += 1
        text = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        try:
            job.emit(Event("error", text=text, finish_reason=reason))
        except Exception:  # nobody left to tell (its event loop is gone): the engine goes on regardless
            LOG.warning("could not report a failed job", exc_info=True)

    def _drop(self, job: Job) -> None:
        if job in self._rows:
            self._leave([job])

    def _start_all(self, jobs: list[Job]) -> None:
        """Read the prompts of new jobs: decoder prompts of the same length together (one batched
        prefill), then each job's first token; encoder-decoder prompts one by one, each job's first
        token coming from the next step."""
        live = []
        for job in jobs:
            if job.cancelled.is_set():
                self.stats["cancelled"] += 1
            else:
                self._guarded(job, self._prepare)  # its settings are its own: a bad seed fails it alone
                if job.text is not None:
                    live.append(job)
        groups: dict[int, list[Job]] = {}
        for job in live:
            if self.spec.decodes == "seq2seq":
                self._guarded(job, self._start_seq2seq)
            else:
                groups.setdefault(len(job.prompt_ids), []).append(job)
        for group in groups.values():
            try:
                logits, prefilled = self._prefill(group)
            except Exception as exc:  # the shared forward pass: every job of the group fails
                LOG.exception("prefill failed")
                for job in group:
                    self._fail(job, exc)
                continue
            for b, job in enumerate(group):
                self._guarded(job, functools.partial(self._join, logits=logits[b], prefilled=prefilled, row=b))

    def _prepare(self, job: Job) -> None:
        """The job's settings (checked again here: a library caller may skip the web app), random
        generator and text stream."""
        job.settings.validate()
        if not job.settings.greedy:
            job.generator, _ = make_generator(job.settings.seed)
        job.text = TextStream(job.stop)

    def _decoder_pool(self) -> DecoderRows:
        if self._pool is None:  # only decoder jobs are prefilled: the model is a Decoder
            self._pool = decoder_rows(cast(Decoder, self.model), self.max_batch, self.window)
        return cast(DecoderRows, self._pool)

    def _prefill(self, jobs: list[Job]) -> tuple[torch.Tensor, Any]:
        """Decoder prompts of one length in one forward pass: the logits (B, T, V) (the prediction
        after every prompt token; (B, 1, V), after the last, when no job echoes its prompt) and the
        state the pool takes each job's row of."""
        ids = torch.tensor([job.prompt_ids for job in jobs], dtype=torch.long)  # (B, T)
        return self._decoder_pool().prefill(ids, every=any(job.echo for job in jobs))

    def _join(self, job: Job, logits: torch.Tensor, prefilled: Any, row: int) -> None:
        """A prefilled job (its logits (T or 1, V), its row of ``prefilled``): echo, first token, into the batch."""
        if job.echo:
            job.emit(Event("prompt", self._prompt_tokens(job, logits), text=self.tokenizer.decode(job.prompt_ids)))
        if job.max_tokens == 0:
            self._finish(job, "length")
        elif self._advance(job, logits[-1]):
            self._decoder_pool().add(prefilled, row)
            self._rows.append(job)

    def _start_seq2seq(self, job: Job) -> None:
        """Encode one encoder-decoder prompt into the pool; its first decoder input is the start token."""
        if job.echo:
            job.emit(
                Event(
                    "prompt", [TokenInfo(t, None) for t in job.prompt_ids], text=self.tokenizer.decode(job.prompt_ids)
                )
            )
        if job.max_tokens == 0:
            return self._finish(job, "length")
        if self._pool is None:  # only an encoder-decoder's jobs start here
            self._pool = Seq2SeqRows(cast(EncoderDecoder, self.model), self.max_batch)
        cast(Seq2SeqRows, self._pool).add(job.prompt_ids)
        job.pending = self.tokenizer.decoder_start_id
        self._rows.append(job)

    def _prompt_tokens(self, job: Job, logits: torch.Tensor) -> list[TokenInfo]:
        """The prompt's own tokens with the log-probability the model gave each (first: None)."""
        out = [TokenInfo(job.prompt_ids[0], None, [] if job.logprobs else None)]
        if len(job.prompt_ids) > 1:
            logp = within_vocabulary(logits[:-1], self.vocab).float().log_softmax(-1)  # (T-1, V): t predicts t+1
            nxt = torch.tensor(job.prompt_ids[1:])
            chosen = logp.gather(1, nxt[:, None])[:, 0].tolist()
            tops = self._top(logp, job.logprobs)
            for i, tok in enumerate(job.prompt_ids[1:]):
                out.append(TokenInfo(tok, chosen[i], tops[i] if tops is not None else None))
        return out

    @staticmethod
    def _top(logp: torch.Tensor, k: int | None) -> list[list[tuple[int, float]]] | None:
        if not k:
            return None
        vals, idx = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)
        return [list(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]

    def _advance(self, job: Job, logits: torch.Tensor, argmax: int | None = None) -> bool:
        """Choose the job's next token from its logits (V,), report it; False when the job ended.
        ``argmax``: the row's most likely token, already computed for the whole batch at once."""
        if job.cancelled.is_set():
            self.stats["cancelled"] += 1
            return False
        expl = None
        logits = within_vocabulary(logits, self.vocab)  # an embedding's padding rows are no token
        if argmax is not None and job.settings.greedy and not job.explain:
            tok = argmax
        else:
            token, expl = choose_next(
                logits[None], job.settings, job.generator, explain=job.explain, n_candidates=10, step=job.steps
            )
            tok = int(token[0])
        info = TokenInfo(tok, None)
        if job.logprobs is not None:
            logp = logits.float().log_softmax(-1)
            info.logprob = float(logp[tok])
            top = self._top(logp[None], job.logprobs)
            info.top = top[0] if top is not None else None
        if expl is not None:
            info.explain = expl[0]
        job.steps += 1
        job.generated.append(tok)
        assert job.text is not None
        eos = job.settings.stop_at_eos and tok in self.tokenizer.eos_ids  # any of the model's eos ids
        piece = "" if eos else job.text.push(token_text_bytes(self.tokenizer, tok, self.plain))
        job.emit(Event("token", [info], text=piece))
        if eos or job.text.stopped:
            self._finish(job, "stop")
            return False
        if self.spec.decodes == "causal":  # the output continues the prompt in the same window
            room = self.window - len(job.prompt_ids) - len(job.generated)
        else:  # the next step feeds the last token at decoder position len(generated)
            room = 1 if self._positions is None else self._positions.num_embeddings - len(job.generated)
        if job.steps >= job.max_tokens or room <= 0:
            self._finish(job, "length")
            return False
        job.pending = tok
        return True

    def _finish(self, job: Job, reason: str) -> None:
        job.ended = True
        tail = job.text.finish() if job.text is not None else ""
        self.stats["finished"] += 1
        job.emit(Event("done", text=tail, finish_reason=reason))

    def _step_batch(self) -> None:
        """One decode step for every running decoder row; finished rows leave the batch."""
        cancelled = [j for j in self._rows if j.cancelled.is_set()]
        if cancelled:
            self.stats["cancelled"] += len(cancelled)
            self._leave(cancelled)
            if not self._rows:
                return
        assert self._pool is not None
        ids = torch.tensor([[j.pending] for j in self._rows], dtype=torch.long)  # (B, 1)
        logits = self._pool.step(ids)  # (B, V), each row at its own position
        self.stats["steps"] += 1
        self.stats["batched_rows"] += len(self._rows)
        best = (
            within_vocabulary(logits, self.vocab).argmax(dim=-1).tolist()
        )  # (B,): the greedy rows' tokens in one call
        ended = []
        for b, job in enumerate(self._rows):
            try:
                if not self._advance(job, logits[b], best[b]):
                    ended.append(job)
            except Exception as exc:  # this row's choice failed: it leaves, the others go on
                LOG.exception("generation failed")
                self._fail(job, exc)
                ended.append(job)
        if ended:
            self._leave(ended)

    def _leave(self, jobs: list[Job]) -> None:
        assert self._pool is not None
        gone = [b for b, j in enumerate(self._rows) if j in jobs]
        for src, dst in self._pool.remove(gone):  # the same moves for the jobs as for their rows
            self._rows[dst] = self._rows[src]
        del self._rows[len(self._rows) - len(gone) :]


def wait_idle(engine: Engine, timeout: float = 5.0) -> bool:
    """True once the engine has nothing running or waiting (tests and shutdown use it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        b = engine.busy()
        if b["running"] == 0 and b["waiting"] == 0:
            return True
        time.sleep(0.01)
    return False


def load_engine(checkpoint: str, max_batch: int = 16, max_queue: int = 64, verify: bool = True) -> tuple[Engine, str]:
    """The engine over ``checkpoint`` (a checkpoint folder or a run folder: its newest checkpoint),
    and the model name it is served under by default: the checkpoint folder's name, or its run
    folder's for a ``ckpt-*`` folder inside a run."""
    from pathlib import Path

    from lmkit.models.checkpoint import load_model, load_tokenizer, resolve_checkpoint

    ckpt = resolve_checkpoint(checkpoint)
    model = load_model(ckpt, verify=verify)
    tokenizer = load_tokenizer(ckpt, verify=verify)
    name = Path(ckpt).name if not Path(ckpt).name.startswith("ckpt-") else Path(ckpt).parent.name
    return Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue), name
