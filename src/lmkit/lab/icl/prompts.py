"""In-context learning prompts: zero-, one- and few-shot, built by pure functions.

What this module owns: :func:`draw_exemplars` (which examples are shown), :func:`render_prompt`
(the exact text) and :func:`build_prompt` (both, fitted to the context window), with
:class:`Prompt` (the text, the exemplars shown and how many were asked for).

A k-shot prompt is the instruction, k completed exemplars and the query, joined by the
separator::

    <instruction><sep><template(x1)><delim><y1><sep>...<sep><template(xk)><delim><yk><sep><template(q)>

The model's answer is the continuation ``<delim><answer>``. Exemplars come from the task's train
split, or else from the rest of the evaluated file (never the queried example itself), drawn by a
generator seeded by (seed, the example's index) alone: the same example gets the same prompt in
any run, at any batch size and under any ``--limit``, and the k-shot exemplars are the first k of
the (k+1)-shot ones. An example with a ``group`` draws its exemplars from its own group only
(the draw is over the group's members, in pool order). When k exemplars do not fit in the
context window the last-drawn are dropped (the query is never cut) and :attr:`Prompt.shots`
says how many were kept.

The scoring of the prompts is :mod:`lmkit.lab.icl.score`; the tasks :mod:`lmkit.lab.icl.tasks`;
running a model over a task :mod:`lmkit.lab.icl.run`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lmkit.errors import LmkitError
from lmkit.lab.icl.tasks import Example, PromptFormat, Task


@dataclass(frozen=True)
class Prompt:
    """One query's prompt: ``text`` ends with the query's template (the answer is not in it)."""

    index: int  # the query's position in the task's examples
    text: str
    exemplars: tuple[int, ...]  # indices into the task's pool, in prompt order
    shots_asked: int

    @property
    def shots(self) -> int:
        """Exemplars actually in the prompt (fewer than asked when the window is too small)."""
        return len(self.exemplars)


def draw_exemplars(pool_size: int, k: int, seed: int, index: int, exclude: int | None = None) -> list[int]:
    """``k`` distinct pool indices for query ``index``, never ``exclude``; prefix-stable in ``k``.

    The generator is seeded by ``(seed, index)`` only and draws one index at a time (repeats
    skipped), so the first j of the k drawn are exactly what ``k = j`` draws.
    """
    available = pool_size - (1 if exclude is not None and 0 <= exclude < pool_size else 0)
    k = min(k, available)
    if k <= 0:
        return []
    rng = random.Random(f"icl-exemplars:{seed}:{index}")
    chosen: list[int] = []
    taken = set() if exclude is None else {exclude}
    while len(chosen) < k:
        j = rng.randrange(pool_size)
        if j not in taken:
            taken.add(j)
            chosen.append(j)
    return chosen


def render_example(fmt: PromptFormat, ex: Example, with_answer: bool) -> str:
    """One example as text: the template with ``{input}`` replaced, plus ``delim + answer``."""
    text = fmt.template.replace("{input}", ex.input)
    return text + fmt.target_delimiter + ex.target if with_answer else text


def render_prompt(fmt: PromptFormat, exemplars: Sequence[Example], query: Example) -> str:
    """The prompt text: instruction, completed exemplars, the query, joined by the separator."""
    parts = ([fmt.instruction] if fmt.instruction else []) + [render_example(fmt, e, True) for e in exemplars]
    return fmt.separator.join(parts + [render_example(fmt, query, False)])


def continuation(fmt: PromptFormat, answer: str) -> str:
    """What the model must add after the prompt for ``answer``: the delimiter and the answer."""
    return fmt.target_delimiter + answer


def build_prompt(
    task: Task, index: int, k: int, seed: int, fits: Callable[[str, Example], bool] | None = None
) -> Prompt:
    """The k-shot prompt of example ``index``; ``fits(text, query)`` says whether a prompt (and
    its longest answer) fits the model's window: exemplars are dropped, last-drawn first, until
    it does. Raises :class:`LmkitError` when even the query alone does not fit."""
    query = task.examples[index]
    members: Sequence[int] = (
        range(len(task.pool)) if query.group is None else [j for j, e in enumerate(task.pool) if e.group == query.group]
    )
    exclude = members.index(index) if task.train is None and index in members else None
    order = [members[j] for j in draw_exemplars(len(members), k, seed, index, exclude)]
    while True:
        text = render_prompt(task.format, [task.pool[j] for j in order], query)
        if fits is None or fits(text, query):
            return Prompt(index, text, tuple(order), k)
        if not order:
            raise LmkitError(
                f"{query.where or f'example {index}'}: the query alone does not fit in the model's "
                "context window; shorten it (the query is never cut)"
            )
        order = order[:-1]
