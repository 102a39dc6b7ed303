"""Tasks: where prompts come from and how responses are scored (the verifiers of RLVR).

A task hands the job training problems (drawn with the job's RNG), a fixed list of held-out eval
problems, a reward and a correctness check per response, and a supervised target per problem
(used only to warm-start the built-in ``tiny`` policy). Built-ins:

- ``addition``: ``"12+34="`` -> ``"46"``; reward 1.0 for the exact sum.
- ``gsm8k``: question/answer rows from a local JSONL or Parquet file. ``verifier: numeric``: the
  reference is the number after ``####`` (else the answer's last number); a response is correct
  when its last number is numerically equal. ``verifier: math_verify``: the reference is the text
  after ``####`` (else the whole answer), and ``math-verify`` (Hugging Face's parser and verifier
  for LaTeX and numeric answers, the standard of RLVR math rewards) decides equality, so
  ``\\frac{1}{2}`` matches 0.5 and a ``\\boxed{}`` answer is found.
- ``random``: addition prompts, reward ~ Bernoulli(p) independent of the response (the control
  experiment of arXiv 2509.26114); ``correct`` is still the real addition check, so eval keeps
  measuring accuracy.
- ``user``: ``module:function`` called as ``function(**args)``, returning an object that follows
  :class:`Task`.

Writing a user task::

    # mytask.py  (importable: on PYTHONPATH on every worker)
    from sweeper.rl.tasks import Problem

    class Parity:
        alphabet = "01 evnod"               # characters the tiny policy's tokenizer needs
        def train_problems(self, rng, n):   # rng: random.Random seeded per job
            return [self._make(rng.getrandbits(8)) for _ in range(n)]
        def eval_problems(self, n):         # the same list on every call (fixed held-out set)
            return [self._make(x) for x in range(n)]
        def reward(self, problem, response):
            return float(self.correct(problem, response))
        def correct(self, problem, response):
            return response.strip() == problem.answer
        def supervised_target(self, problem):
            return problem.answer
        def _make(self, x):
            return Problem(prompt=f"{x:08b} ", answer="even" if x % 2 == 0 else "odd")

    def make(**args):
        return Parity()

and in the recipe: ``task: {kind: user, fn: "mytask:make", args: {}}``.
"""

from __future__ import annotations

import importlib
import math
import random
import re
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sweeper.config.job import AdditionTask, FileTask, RandomRewardTask, TaskConfig, UserTask
from sweeper.config.task_files import read_task_rows
from sweeper.errors import InputError
from sweeper.seeding import derive_seed

__all__ = [
    "AdditionVerifier",
    "FileQATask",
    "Problem",
    "RandomReward",
    "Task",
    "extract_answer_number",
    "last_number",
    "make_task",
    "math_verify_match",
    "numbers_match",
    "tokenizer_alphabet",
]


@dataclass(frozen=True)
class Problem:
    """One prompt with its reference answer.

    ``prompt`` is the task's text: the policy continues it as is, or, when the policy uses a
    chat template (``policy.chat_template``), as the user turn of the rendered template;
    ``answer`` is the reference the verifier compares with; ``target`` is the full supervised
    continuation used by the tiny policy's warm start (defaults to ``answer``); ``meta`` is free
    for user tasks.
    """

    prompt: str
    answer: str
    target: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class Task(Protocol):
    """What the job needs from a task. Implement it for ``kind: user`` tasks.

    Attributes:
        alphabet: characters the built-in ``tiny`` policy's character tokenizer must cover
            (prompts and answers); ``None`` means printable ASCII. Ignored by HF policies.

    Optional hooks: ``reset(seed: int) -> None`` is called at the start of every job with the
    job's seed; a task whose reward is random (like ``random``) re-seeds its RNG there so the
    same seed gives the same rewards. ``eval_reward(problem, response) -> float`` is the reward
    reported for logged eval samples (default ``reward``); a task with random rewards defines it
    so that logging samples does not consume the training reward stream.
    """

    alphabet: str | None

    def train_problems(self, rng: random.Random, n: int) -> list[Problem]:
        """``n`` training problems drawn with ``rng`` (seeded per job)."""
        ...

    def eval_problems(self, n: int) -> list[Problem]:
        """The first ``n`` held-out problems; the same list on every call and for every seed."""
        ...

    def reward(self, problem: Problem, response: str) -> float:
        """Scalar reward of one decoded response (special tokens removed)."""
        ...

    def correct(self, problem: Problem, response: str) -> bool:
        """Whether the response solves the problem (drives accuracy, pass@k, mean@n)."""
        ...

    def supervised_target(self, problem: Problem) -> str:
        """The text a correct response would be (for the tiny policy's warm start)."""
        ...


_REQUIRED = ("train_problems", "eval_problems", "reward", "correct", "supervised_target")

# --------------------------------------------------------------------------- numbers

# A number: optional sign, digits with optional thousands commas, optional decimals. Commas are
# stripped before parsing ("1,234" -> 1234); a trailing period ("is 42.") is not a decimal.
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _parse(token: str) -> float | None:
    token = token.replace(",", "").rstrip(".")
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def last_number(text: str) -> float | None:
    """The last number in ``text`` (commas ignored, negatives and decimals kept), or None."""
    for token in reversed(_NUMBER.findall(text)):
        value = _parse(token)
        if value is not None:
            return value
    return None


def extract_answer_number(answer: str) -> float | None:
    """GSM8K reference answer: the number after the last ``####`` if present, else the last
    number of the text."""
    if "####" in answer:
        tail = answer.rsplit("####", 1)[1]
        found = _NUMBER.search(tail)
        if found is not None and (value := _parse(found.group())) is not None:
            return value
    return last_number(answer)


def numbers_match(a: float | None, b: float | None, rel_tol: float = 1e-6) -> bool:
    """Numeric equality with a small relative tolerance (so 46 == 46.0 == 46.000001)."""
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def _math_verify_timeout() -> int | None:
    # math-verify bounds parsing and comparison with signal.alarm, which works only in the main
    # thread; a Ray actor runs jobs in a worker thread, where it must be off (None).
    return MATH_VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


MATH_VERIFY_TIMEOUT_S = 5
"""Seconds math-verify may spend parsing or comparing one answer (main thread only)."""


def _math_parse(text: str) -> list[Any]:
    from math_verify import parse

    return list(parse(text, parsing_timeout=_math_verify_timeout()))  # type: ignore[arg-type]


def _math_parse_reference(text: str) -> list[Any]:
    """A reference answer is the bare answer ("\\sqrt{2}", "x^2 + 2x + 1", "72"): math-verify
    reads LaTeX only inside a math environment, so it is wrapped in ``$...$`` unless it already
    has one (then, or if that finds nothing, it is parsed as given)."""
    if "$" not in text and "\\boxed" not in text:
        wrapped = _math_parse(f"${text}$")
        if wrapped:
            return wrapped
    return _math_parse(text)


def math_verify_match(reference: str | list[Any], response: str) -> bool:
    """Whether ``response`` states the ``reference`` answer, by ``math-verify``.

    ``reference``: the gold answer text (LaTeX or a number), or its already parsed form. The
    response's last LaTeX (``$...$``, ``\\boxed{}``) or plain expression is extracted and compared
    symbolically and numerically (``\\frac{1}{2}`` == 0.5; 2 != 3). Unparseable -> False.
    """
    from math_verify import verify

    gold = _math_parse_reference(reference) if isinstance(reference, str) else reference
    if not gold:
        return False
    answer = _math_parse(response)
    if not answer:
        return False
    return bool(verify(gold, answer, timeout_seconds=_math_verify_timeout()))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- addition


class AdditionVerifier:
    """``a+b=`` with ``digits``-digit operands (1 digit: 0-9), answer the exact sum.

    The held-out pool is a fixed pseudo-random set of problems (the same in every process);
    training draws skip it, so eval measures generalisation rather than memorisation.
    """

    alphabet = "0123456789+="

    def __init__(self, digits: int = 2) -> None:
        self.digits = digits
        self._low = 0 if digits == 1 else 10 ** (digits - 1)
        self._high = 10**digits  # exclusive
        span = self._high - self._low
        total = span * span
        # Hold out up to 512 problems but never more than a fifth of the space (1 digit: 20).
        pool_size = max(1, min(512, total // 5))
        rng = random.Random(derive_seed("addition-eval", digits))
        pool: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        while len(pool) < pool_size:
            pair = (rng.randrange(self._low, self._high), rng.randrange(self._low, self._high))
            if pair not in seen:
                seen.add(pair)
                pool.append(pair)
        self._eval_pool = pool
        self._held_out = seen

    @staticmethod
    def _problem(a: int, b: int) -> Problem:
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b))

    def train_problems(self, rng: random.Random, n: int) -> list[Problem]:
        out = []
        while len(out) < n:
            pair = (rng.randrange(self._low, self._high), rng.randrange(self._low, self._high))
            if pair not in self._held_out:
                out.append(self._problem(*pair))
        return out

    def eval_problems(self, n: int) -> list[Problem]:
        # More prompts than the pool holds repeat it (only possible with 1-digit operands).
        return [self._problem(*self._eval_pool[i % len(self._eval_pool)]) for i in range(n)]

    def correct(self, problem: Problem, response: str) -> bool:
        # Exact string match of the sum: the tiny policy must answer "46", not "046" or "46=".
        return response.strip() == problem.answer

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if self.correct(problem, response) else 0.0

    def supervised_target(self, problem: Problem) -> str:
        return problem.answer


class RandomReward(AdditionVerifier):
    """Addition prompts with reward ~ Bernoulli(p), independent of the response (arXiv
    2509.26114's control). ``correct`` stays the real check. Re-seeded per job by ``reset``."""

    def __init__(self, p: float = 0.5, digits: int = 2) -> None:
        super().__init__(digits)
        self.p = p
        self._rng = random.Random(0)
        self._eval_rng = random.Random(1)

    def reset(self, seed: int) -> None:
        """Re-seed the reward RNGs from the job seed (same seed -> same reward sequence)."""
        self._rng = random.Random(derive_seed("random-reward", seed))
        self._eval_rng = random.Random(derive_seed("random-reward-eval", seed))

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if self._rng.random() < self.p else 0.0

    def eval_reward(self, problem: Problem, response: str) -> float:
        """A Bernoulli(p) draw from a stream of its own (logged eval samples leave the training
        rewards untouched)."""
        return 1.0 if self._eval_rng.random() < self.p else 0.0


# --------------------------------------------------------------------------- GSM8K-style files


def _read_rows(path: Path) -> list[dict[str, Any]]:
    # The file format is read in one place, torch-free, shared with the preflight.
    rows = read_task_rows(path)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"task.path: {path}: row {i} is a {type(row).__name__}, not a record")
    return rows


class FileQATask:
    """GSM8K/MATH-style question/answer rows from a local JSONL or Parquet file.

    Prompt: ``"Question: {question}\\nAnswer:"``. ``verifier="numeric"``: the reference is
    :func:`extract_answer_number` of the answer column and a response is correct when its
    :func:`last_number` matches numerically. ``verifier="math_verify"``: the reference is the
    answer's text after ``####`` (else all of it) and :func:`math_verify_match` decides.
    The held-out split is a fixed shuffle (seed 0) of the rows; ``eval_fraction`` of them (at
    least one) are eval-only.
    """

    alphabet: str | None = None  # free text: printable ASCII

    def __init__(
        self,
        path: str | Path,
        question_key: str = "question",
        answer_key: str = "answer",
        eval_fraction: float = 0.1,
        verifier: str = "numeric",
    ) -> None:
        if verifier not in ("numeric", "math_verify"):
            raise InputError(f"task.verifier: {verifier!r}; valid: numeric, math_verify")
        self.verifier = verifier
        self._gold: dict[str, list[Any]] = {}  # reference text -> parsed (math_verify)
        self.path = Path(path).expanduser()
        rows = _read_rows(self.path)
        problems = []
        for i, row in enumerate(rows):
            if question_key not in row or answer_key not in row:
                raise InputError(
                    f"task.path: {self.path}: row {i} lacks '{question_key}' or '{answer_key}' "
                    f"(has {sorted(row)})"
                )
            answer_text = str(row[answer_key])
            problems.append(
                Problem(
                    prompt=f"Question: {row[question_key]}\nAnswer:",
                    answer=self._reference(answer_text, i),
                    target=" " + answer_text.strip(),
                )
            )
        if len(problems) < 2:
            raise InputError(f"task.path: {self.path}: needs at least 2 rows, has {len(problems)}")
        order = list(range(len(problems)))
        random.Random(0).shuffle(order)
        n_eval = min(len(problems) - 1, max(1, round(eval_fraction * len(problems))))
        self._eval = [problems[i] for i in order[:n_eval]]
        self._train = [problems[i] for i in order[n_eval:]]

    def train_problems(self, rng: random.Random, n: int) -> list[Problem]:
        return [self._train[rng.randrange(len(self._train))] for _ in range(n)]

    def eval_problems(self, n: int) -> list[Problem]:
        return [self._eval[i % len(self._eval)] for i in range(n)]

    def _reference(self, answer_text: str, row: int) -> str:
        """The reference answer of one row, checked to be usable by the verifier."""
        if self.verifier == "numeric":
            reference = extract_answer_number(answer_text)
            if reference is None:
                raise InputError(f"task.path: {self.path}: row {row} answer has no number")
            return _format_number(reference)
        text = answer_text.rsplit("####", 1)[1] if "####" in answer_text else answer_text
        text = text.strip()
        gold = _math_parse_reference(text)
        if not gold:
            raise InputError(f"task.path: {self.path}: row {row}: math-verify finds no answer")
        self._gold[text] = gold
        return text

    def correct(self, problem: Problem, response: str) -> bool:
        if self.verifier == "math_verify":
            return math_verify_match(self._gold.get(problem.answer, problem.answer), response)
        return numbers_match(last_number(response), float(problem.answer))

    def reward(self, problem: Problem, response: str) -> float:
        return 1.0 if self.correct(problem, response) else 0.0

    def supervised_target(self, problem: Problem) -> str:
        return problem.target if problem.target is not None else " " + problem.answer


def _format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


# --------------------------------------------------------------------------- factory


def _load_user_task(cfg: UserTask) -> Task:
    module_name, _, fn_name = cfg.fn.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or any error raised while importing the module
        raise InputError(f"task.fn: cannot import module {module_name!r}: {err}") from err
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise InputError(f"task.fn: module {module_name!r} has no callable {fn_name!r}")
    try:
        task = fn(**cfg.args)
    except TypeError as err:
        raise InputError(f"task.args: {cfg.fn} rejected the arguments: {err}") from err
    missing = [name for name in _REQUIRED if not callable(getattr(task, name, None))]
    if missing:
        raise InputError(
            f"task.fn: {cfg.fn} returned {type(task).__name__}, which lacks {', '.join(missing)} "
            "(see sweeper.rl.tasks.Task)"
        )
    if not hasattr(task, "alphabet"):
        task.alphabet = None  # type: ignore[attr-defined]
    return task  # type: ignore[no-any-return]


def make_task(cfg: TaskConfig | dict[str, Any]) -> Task:
    """Build the task a job's ``task`` block describes (a validated model or a plain dict).

    Raises:
        InputError: a missing or malformed file, or a user task that cannot be imported or
            does not follow :class:`Task`.
    """
    if isinstance(cfg, dict):
        from pydantic import TypeAdapter, ValidationError

        from sweeper.config.messages import describe_validation_error

        try:
            cfg = TypeAdapter(TaskConfig).validate_python(cfg)
        except ValidationError as err:
            raise InputError(describe_validation_error(err, "task")) from err
    build = _BUILDERS.get(type(cfg))
    if build is None:
        raise InputError(f"task.kind: unsupported task {cfg!r}")
    return build(cfg)


# One builder per task config type (the ``kind`` discriminator picks the config type).
_BUILDERS: dict[type, Callable[[Any], Task]] = {
    AdditionTask: lambda c: AdditionVerifier(c.digits),
    RandomRewardTask: lambda c: RandomReward(c.p, c.digits),
    FileTask: lambda c: FileQATask(
        c.path, c.question_key, c.answer_key, c.eval_fraction, c.verifier
    ),
    UserTask: _load_user_task,
}


def tokenizer_alphabet(task: Task) -> str:
    """The characters the tiny policy's tokenizer covers for ``task`` (printable ASCII when the
    task does not say)."""
    alphabet = getattr(task, "alphabet", None)
    if alphabet is None:
        # string.printable minus the rarer whitespace; '\n' kept for multi-line prompts.
        return "".join(c for c in string.printable if c not in "\t\r\x0b\x0c")
    return "".join(dict.fromkeys(alphabet))  # de-duplicated, order kept
