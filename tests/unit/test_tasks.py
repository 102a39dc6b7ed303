"""Tasks and verifiers: answer extraction, numeric match, data files, random and user tasks,
and the tiny policy's character tokenizer."""

from __future__ import annotations

import json
import random
import sys
import textwrap
import threading

import pytest

from sweeper.config.job import AdditionTask, FileTask, RandomRewardTask, UserTask
from sweeper.errors import InputError
from sweeper.rl.policy import CharTokenizer
from sweeper.rl.tasks import (
    AdditionVerifier,
    FileQATask,
    Problem,
    RandomReward,
    Task,
    extract_answer_number,
    last_number,
    make_task,
    math_verify_match,
    numbers_match,
    tokenizer_alphabet,
)

# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42", 42.0),
        ("first 3 then 7.", 7.0),  # trailing period is not a decimal point
        ("total: 1,234,567 apples", 1234567.0),
        ("it dropped to -15 degrees", -15.0),
        ("pi is about 3.14159", 3.14159),
        ("costs $0.50 each, so 12.5 in all", 12.5),
        ("no digits here", None),
        ("", None),
    ],
)
def test_last_number(text: str, expected: float | None) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", 7.0),
        ("Step 1: 10 * 2 = 20\n#### 1,000", 1000.0),
        ("#### -3.5", -3.5),
        ("the result is 18 after 2 steps", 2.0),  # no '####': last number of the text
        ("#### 12 dollars, not 13", 12.0),  # the number right after '####'
    ],
)
def test_extract_answer_number(answer: str, expected: float) -> None:
    assert extract_answer_number(answer) == expected


def test_numbers_match() -> None:
    assert numbers_match(46.0, 46.0)
    assert numbers_match(46.0, 46.0000000001)
    assert numbers_match(-0.5, -0.5)
    assert not numbers_match(46.0, 47.0)
    assert not numbers_match(0.1, 0.2)
    assert not numbers_match(None, 1.0)
    assert not numbers_match(1.0, None)


# --------------------------------------------------------------------------- addition


def test_addition_prompts_answers_and_reward() -> None:
    task = AdditionVerifier(digits=2)
    problems = task.train_problems(random.Random(0), 50)
    for p in problems:
        a, b = p.prompt.removesuffix("=").split("+")
        assert 10 <= int(a) <= 99 and 10 <= int(b) <= 99
        assert p.answer == str(int(a) + int(b))
        assert task.supervised_target(p) == p.answer
    p = Problem(prompt="12+34=", answer="46")
    assert task.reward(p, "46") == 1.0
    assert task.reward(p, " 46 ") == 1.0
    assert task.reward(p, "47") == 0.0
    assert task.reward(p, "046") == 0.0
    assert task.reward(p, "") == 0.0
    assert task.correct(p, "46") and not task.correct(p, "4")


def test_addition_eval_set_fixed_and_held_out() -> None:
    first, second = AdditionVerifier(2), AdditionVerifier(2)
    assert first.eval_problems(32) == second.eval_problems(32)
    assert first.eval_problems(10) == first.eval_problems(32)[:10]
    held_out = {p.prompt for p in first.eval_problems(512)}
    assert len(held_out) == 512
    train = first.train_problems(random.Random(1), 2000)
    assert not held_out & {p.prompt for p in train}
    # The same RNG seed gives the same training problems.
    assert first.train_problems(random.Random(7), 20) == second.train_problems(random.Random(7), 20)


def test_addition_one_digit_eval_wraps() -> None:
    task = AdditionVerifier(1)
    problems = task.eval_problems(30)  # pool holds 20 (a fifth of 100)
    assert len(problems) == 30 and problems[20] == problems[0]


# --------------------------------------------------------------------------- random reward


def test_random_reward_rate_and_independence() -> None:
    task = RandomReward(p=0.3, digits=2)
    task.reset(5)
    problem = Problem(prompt="12+34=", answer="46")
    right = [task.reward(problem, "46") for _ in range(4000)]
    wrong = [task.reward(problem, "99") for _ in range(4000)]
    assert set(right) | set(wrong) <= {0.0, 1.0}
    # Binomial SE at n=4000, p=0.3 is 0.007: 0.03 is > 4 SE.
    assert abs(sum(right) / 4000 - 0.3) < 0.03
    assert abs(sum(wrong) / 4000 - 0.3) < 0.03
    # correct() stays the real check.
    assert task.correct(problem, "46") and not task.correct(problem, "99")


def test_random_reward_seeded_by_reset() -> None:
    task = RandomReward(p=0.5)
    problem = Problem(prompt="1+1=", answer="2")
    task.reset(3)
    first = [task.reward(problem, "2") for _ in range(64)]
    task.reset(3)
    # Identical sequence regardless of the response text: the reward ignores it.
    assert [task.reward(problem, str(i)) for i in range(64)] == first
    task.reset(4)
    assert [task.reward(problem, "2") for _ in range(64)] != first


def test_random_reward_extremes() -> None:
    never, always = RandomReward(p=0.0), RandomReward(p=1.0)
    problem = Problem(prompt="1+1=", answer="2")
    assert all(never.reward(problem, "2") == 0.0 for _ in range(100))
    assert all(always.reward(problem, "x") == 1.0 for _ in range(100))


# --------------------------------------------------------------------------- GSM8K-style files

_ROWS = [
    {"question": f"What is {i} times 3?", "answer": f"{i} * 3 = {3 * i}\n#### {3 * i:,}"}
    for i in range(1, 401)
]


def test_jsonl_file(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _ROWS) + "\n\n")
    task = make_task(FileTask(path=str(path), eval_fraction=0.25))
    assert isinstance(task, FileQATask)
    evals = task.eval_problems(100)
    assert len({p.prompt for p in evals}) == 100  # 25 % of 400 rows held out
    train = {p.prompt for p in task.train_problems(random.Random(0), 500)}
    assert not train & {p.prompt for p in evals}
    problem = evals[0]
    i = int(problem.prompt.split()[3])
    assert problem.prompt == f"Question: What is {i} times 3?\nAnswer:"
    assert problem.answer == str(3 * i)
    assert task.correct(problem, f"{i}*3 is {3 * i:,}.")
    assert task.correct(problem, f"so {3 * i}.0")
    assert not task.correct(problem, f"{3 * i} or maybe {3 * i + 1}")  # the LAST number counts
    assert task.reward(problem, f"The answer is {3 * i}") == 1.0
    assert task.reward(problem, "no idea") == 0.0
    assert task.supervised_target(problem).strip().endswith(f"#### {3 * i:,}")


def test_parquet_file_custom_keys(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "qa.parquet"
    table = pa.table({"q": [r["question"] for r in _ROWS[:20]], "a": ["-2.5", "7", *["1"] * 18]})
    pq.write_table(table, path)
    task = make_task({"kind": "gsm8k", "path": str(path), "question_key": "q", "answer_key": "a"})
    problems = task.eval_problems(2) + task.train_problems(random.Random(0), 200)
    answers = {p.answer for p in problems}
    assert answers <= {"-2.5", "7", "1"} and "1" in answers
    neg = Problem(prompt="x", answer="-2.5")
    assert task.correct(neg, "it is -2.5") and not task.correct(neg, "it is 2.5")


# --------------------------------------------------------------------------- math-verify


@pytest.mark.parametrize(
    ("reference", "response", "expected"),
    [
        ("0.5", "$\\frac{1}{2}$", True),  # LaTeX fraction for a decimal
        ("0.5", "so the answer is \\boxed{\\frac{1}{2}}", True),
        ("\\frac{1}{2}", "It is 0.5", True),  # and the other way round
        ("3", "2", False),
        ("3", "The answer is 2.", False),
        ("3", "I get 3", True),
        ("1,234", "1234", True),
        ("\\sqrt{2}", "$2^{1/2}$", True),  # symbolic equality
        ("x^2 + 2x + 1", "$(x+1)^2$", True),
        ("7", "no idea", False),
    ],
)
def test_math_verify_match(reference: str, response: str, expected: bool) -> None:
    assert math_verify_match(reference, response) is expected


def test_math_verify_file_task_gsm8k_and_math_rows(tmp_path) -> None:
    rows = [
        {"question": "Half of one?", "answer": "\\frac{1}{2}"},  # MATH-style LaTeX answer
        {"question": "Clips?", "answer": "48 + 24 = 72\n#### 72"},  # GSM8K-style
        *({"question": f"q{i}", "answer": str(i)} for i in range(8)),
    ]
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = make_task(FileTask(path=str(path), verifier="math_verify", eval_fraction=0.5))
    problems = {p.prompt: p for p in task.eval_problems(10) + task.train_problems(
        random.Random(0), 200)}  # fmt: skip
    half, clips = problems["Question: Half of one?\nAnswer:"], problems["Question: Clips?\nAnswer:"]
    assert half.answer == "\\frac{1}{2}" and clips.answer == "72"
    assert task.correct(half, "The answer is $0.5$") and task.reward(half, "\\boxed{1/2}") == 1.0
    assert not task.correct(half, "$\\frac{1}{3}$")
    assert task.correct(clips, "She sold 72 clips.") and not task.correct(clips, "71")
    # The numeric verifier reads the same file differently: "\frac{1}{2}" has numbers 1 and 2.
    numeric = make_task(FileTask(path=str(path), eval_fraction=0.5))
    numeric_half = next(p for p in numeric.eval_problems(10) + numeric.train_problems(
        random.Random(0), 200) if p.prompt == half.prompt)  # fmt: skip
    assert not numeric.correct(numeric_half, "The answer is 0.5")


def test_math_verify_works_off_the_main_thread() -> None:
    """A Ray actor runs jobs in a worker thread, where math-verify's signal timeout cannot be
    used: the verifier still answers there."""
    results: list[bool] = []
    worker = threading.Thread(
        target=lambda: results.extend(
            [math_verify_match("0.5", "$\\frac{1}{2}$"), math_verify_match("3", "2")]
        )
    )
    worker.start()
    worker.join(timeout=60)
    assert results == [True, False]


def test_math_verify_row_without_an_answer_is_input_error(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "#### "}) + "\n")
    with pytest.raises(InputError, match="math-verify finds no answer"):
        make_task(FileTask(path=str(path), verifier="math_verify"))


def test_missing_file_names_path(tmp_path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match=r"nope\.jsonl"):
        make_task(FileTask(path=str(missing)))


def test_bad_rows_are_input_errors(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "solution": "1"}) + "\n")
    with pytest.raises(InputError, match="lacks"):
        make_task(FileTask(path=str(path)))
    path.write_text("{not json\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1"):
        make_task(FileTask(path=str(path)))
    other = tmp_path / "qa.csv"
    other.write_text("question,answer\n")
    with pytest.raises(InputError, match=r"jsonl or \.parquet"):
        make_task(FileTask(path=str(other)))


# --------------------------------------------------------------------------- user tasks

_USER_MODULE = textwrap.dedent(
    """
    from sweeper.rl.tasks import Problem

    class Echo:
        alphabet = "abc"

        def __init__(self, word):
            self.word = word

        def train_problems(self, rng, n):
            return [Problem(prompt=self.word, answer=self.word) for _ in range(n)]

        def eval_problems(self, n):
            return [Problem(prompt=self.word, answer=self.word)] * n

        def reward(self, problem, response):
            return 2.0 if response == problem.answer else -1.0

        def correct(self, problem, response):
            return response == problem.answer

        def supervised_target(self, problem):
            return problem.answer

    def make(word="abc"):
        return Echo(word)

    def broken():
        return object()
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "sweeper_test_usertask.py").write_text(_USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "sweeper_test_usertask"
    sys.modules.pop("sweeper_test_usertask", None)


def test_user_task(user_module) -> None:
    task = make_task(UserTask(fn=f"{user_module}:make", args={"word": "cab"}))
    assert isinstance(task, Task)
    (problem,) = task.eval_problems(1)
    assert problem.prompt == "cab"
    assert task.reward(problem, "cab") == 2.0 and task.reward(problem, "abc") == -1.0
    assert tokenizer_alphabet(task) == "abc"


def test_user_task_errors(user_module) -> None:
    with pytest.raises(InputError, match="cannot import module 'no_such_module_xyz'"):
        make_task(UserTask(fn="no_such_module_xyz:make"))
    with pytest.raises(InputError, match="no callable 'nothing'"):
        make_task(UserTask(fn=f"{user_module}:nothing"))
    with pytest.raises(InputError, match="lacks train_problems"):
        make_task(UserTask(fn=f"{user_module}:broken"))
    with pytest.raises(InputError, match="rejected the arguments"):
        make_task(UserTask(fn=f"{user_module}:make", args={"colour": "red"}))


def test_make_task_from_dicts_and_models() -> None:
    assert isinstance(make_task(AdditionTask(digits=3)), AdditionVerifier)
    random_task = make_task({"kind": "random", "p": 0.25})
    assert isinstance(random_task, RandomReward) and random_task.p == 0.25
    assert isinstance(make_task(RandomRewardTask()), RandomReward)
    with pytest.raises(InputError, match="digits"):
        make_task({"kind": "addition", "digits": 9})


# --------------------------------------------------------------------------- tokenizer


def test_char_tokenizer_round_trip() -> None:
    tok = CharTokenizer(AdditionVerifier.alphabet)
    assert tok.vocab_size == 4 + 12
    ids = tok.encode("12+34=", bos=True)
    assert ids[0] == tok.bos_id and len(ids) == 7
    assert tok.decode(ids) == "12+34="
    assert tok.decode([*tok.encode("46", eos=True), tok.pad_id, tok.pad_id]) == "46"
    assert tok.encode_prompt("1") == [tok.bos_id, tok.stoi["1"]]
    # Out-of-alphabet characters become <unk>, which decodes to nothing.
    assert tok.encode("1x") == [tok.stoi["1"], tok.unk_id]
    assert tok.decode(tok.encode("1x")) == "1"


def test_char_tokenizer_printable_alphabet_and_hf_twin() -> None:
    alphabet = tokenizer_alphabet(FileQATask.__new__(FileQATask))
    tok = CharTokenizer(alphabet)
    text = "Question: 3 apples, $4.50?\nAnswer: #### 7"
    assert tok.decode(tok.encode(text)) == text
    hf = tok.to_hf()
    assert hf("12+3", add_special_tokens=False)["input_ids"] == tok.encode("12+3")
    assert hf("12+3")["input_ids"] == tok.encode_prompt("12+3")
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hf.decode(tok.encode("a b", eos=True), skip_special_tokens=True) == "a b"
    assert (hf.pad_token_id, hf.bos_token_id, hf.eos_token_id) == (0, 1, 2)
