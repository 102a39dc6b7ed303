"""One contract suite run over every registered rollout engine (``sweeper.rl.engines.ENGINES``),
on a tiny Llama-architecture model built offline (random weights, char vocabulary), CPU.

Every engine must: lay rows out in contiguous per-prompt groups with left-padded prompts and
right-padded, EOS-terminated responses; repeat with the same generator state; sample greedily at
temperature 0 exactly what the trainer's model predicts; follow the weights given to
``sync_weights``; and, if it reports its own log-probs, agree with the trainer's to 1e-4 for
prompts longer than one KV block, before and after a push. ``vllm`` runs when it is installed
(``make setup`` installs vLLM's CPU build) and is skipped otherwise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import torch

from sweeper.config.job import TinyPolicyConfig
from sweeper.errors import InputError
from sweeper.rl.engines import ENGINES, RolloutEngine, make_engine, response_logits
from sweeper.rl.metrics import token_logprobs_and_entropy
from sweeper.rl.policy import CharTokenizer, build_tiny_model

torch.set_num_threads(1)

TOK = CharTokenizer("0123456789+=")
BLOCK = 32  # the vLLM engine's KV block size here; some prompts below are longer
PROMPTS = [
    TOK.encode_prompt("12+34="),
    TOK.encode_prompt("1234567890+" * 4 + "="),  # 46 tokens: more than one block
    TOK.encode_prompt("7+8="),
]
ENGINE_OPTIONS = {
    "hf": {},
    "vllm": {"options": {"block_size": BLOCK, "max_model_len": 128}},
}
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _perturb(model: torch.nn.Module, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_tiny_model(TinyPolicyConfig(), TOK.vocab_size)
    # Sharper than the default init (std 0.02), so samples and argmaxes depend on the weights.
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.mul_(6.0)
    return m.eval()


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request, model) -> Iterator[RolloutEngine]:
    kind = request.param
    if kind == "vllm" and not HAS_VLLM:
        pytest.skip("vllm not installed")
    if kind == "vllm":
        # A process that imported flask (moto's S3 server does, in other tests; a user's reward
        # code might) must still build an engine: vLLM's CPU start-up scans every module.
        importlib.import_module("flask")
    built = make_engine(kind, model, TOK.eos_id, TOK.pad_id, **ENGINE_OPTIONS[kind])
    yield built
    built.close()


@pytest.fixture
def weights_restored(model, engine) -> Iterator[None]:
    """Tests that change the shared model's weights get them (and the engine's) put back."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    yield
    model.load_state_dict(saved)
    engine.sync_weights(model.state_dict().items())


def _trainer_logp(model, batch, temperature: float) -> torch.Tensor:
    with torch.no_grad():
        logp, _ = token_logprobs_and_entropy(
            response_logits(model, batch), batch.response_ids, temperature
        )
    return logp


def _greedy_reference(model, prompt: list[int], max_new: int) -> list[int]:
    """Greedy decoding with plain full forwards (no cache, no padding)."""
    ids = list(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if nxt == TOK.eos_id:
                break
    return out


def _rows(batch) -> list[list[int]]:
    lengths = batch.response_lengths().tolist()
    return [row[:n] for row, n in zip(batch.response_ids.tolist(), lengths, strict=True)]


# --------------------------------------------------------------------------- the contract


def test_layout_groups_padding_and_eos(engine) -> None:
    n, max_new = 5, 6
    batch = engine.generate(
        PROMPTS, n=n, temperature=1.0, max_new_tokens=max_new, generator=torch.Generator()
    )
    assert batch.size == len(PROMPTS) * n
    assert batch.response_ids.shape == batch.response_mask.shape
    assert 1 <= batch.response_ids.shape[1] <= max_new
    width = max(len(p) for p in PROMPTS)
    for i in range(batch.size):
        prompt = PROMPTS[i // n]  # rows of a prompt are contiguous
        pad = width - len(prompt)
        assert batch.prompt_ids[i, pad:].tolist() == prompt
        assert batch.prompt_mask[i].tolist() == [0] * pad + [1] * len(prompt)
        assert set(batch.prompt_ids[i, :pad].tolist()) <= {TOK.pad_id}
        mask = batch.response_mask[i].tolist()
        length = sum(mask)
        assert mask == [1] * length + [0] * (len(mask) - length)  # a prefix, no holes
        ids = batch.response_ids[i].tolist()
        assert set(ids[length:]) <= {TOK.pad_id}
        assert TOK.eos_id not in ids[: length - 1]  # EOS only ever last
        assert length == max_new or ids[length - 1] == TOK.eos_id  # stopped by EOS or the cap
    if batch.engine_logp is not None:
        assert batch.engine_logp.shape == batch.response_ids.shape
        assert (batch.engine_logp[batch.response_mask == 0] == 0).all()
        assert (batch.engine_logp[batch.response_mask == 1] <= 0).all()


def test_same_generator_state_same_samples(engine) -> None:
    def draw(seed: int):
        gen = torch.Generator().manual_seed(seed)
        return engine.generate(PROMPTS, n=8, temperature=1.0, max_new_tokens=6, generator=gen)

    first, again, other = draw(3), draw(3), draw(4)
    assert torch.equal(first.response_ids, again.response_ids)
    assert not torch.equal(first.response_ids, other.response_ids)
    # Samples within a group differ (independent draws, not one sample repeated).
    rows = _rows(first)
    assert len({tuple(r) for r in rows[:8]}) > 1


def test_greedy_is_the_trainers_argmax(engine, model) -> None:
    batch = engine.generate(PROMPTS, n=2, temperature=0.0, max_new_tokens=6)
    rows = _rows(batch)
    for i, prompt in enumerate(PROMPTS):
        want = _greedy_reference(model, prompt, 6)
        assert rows[2 * i] == want and rows[2 * i + 1] == want


def test_follows_the_weights_it_is_given(engine, model, weights_restored) -> None:
    before = _rows(engine.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=6))
    _perturb(model, 0.3, seed=1)
    engine.sync_weights(model.state_dict().items())
    after = _rows(engine.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=6))
    assert after == [_greedy_reference(model, p, 6) for p in PROMPTS]
    assert after != before  # the perturbation changed the greedy answers


def test_engine_logp_is_the_trainers(engine, model, weights_restored) -> None:
    """Engine log-probs (when reported) equal the trainer's at the sampling temperature, for
    prompts longer than one KV block, before and after a push. The long prompt is sampled again
    after the push: KV blocks cached under the old weights must not be reused."""
    gen = torch.Generator().manual_seed(0)
    batch = engine.generate(PROMPTS, n=8, temperature=0.7, max_new_tokens=6, generator=gen)
    if batch.engine_logp is None:
        assert type(engine).__name__ == "HFEngine"  # shares the trainer's module
        return
    assert max(len(p) for p in PROMPTS) > BLOCK
    mask = batch.response_mask.bool()
    diff = (_trainer_logp(model, batch, 0.7) - batch.engine_logp).abs()[mask]
    assert float(diff.max()) < 1e-4

    _perturb(model, 0.3, seed=2)
    stale = engine.generate(PROMPTS, n=8, temperature=0.7, max_new_tokens=6, generator=gen)
    stale_diff = (_trainer_logp(model, stale, 0.7) - stale.engine_logp).abs()
    assert float(stale_diff[stale.response_mask.bool()].max()) > 0.1  # not pushed yet
    engine.sync_weights(model.state_dict().items())
    fresh = engine.generate(PROMPTS, n=8, temperature=0.7, max_new_tokens=6, generator=gen)
    diff = (_trainer_logp(model, fresh, 0.7) - fresh.engine_logp).abs()
    assert float(diff[fresh.response_mask.bool()].max()) < 1e-4


# --------------------------------------------------------------------------- the registry


def test_unknown_engine_lists_the_valid_ones(model) -> None:
    with pytest.raises(InputError, match=r"unknown engine 'sglang'; valid: hf, vllm"):
        make_engine("sglang", model, TOK.eos_id, TOK.pad_id)


def test_vllm_missing_is_one_line_install_hint(model, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)  # `import vllm` fails
    with pytest.raises(InputError, match=r"vllm is not installed here \(pip install") as err:
        make_engine("vllm", model, TOK.eos_id, TOK.pad_id)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- vllm specifics


def test_vllm_tied_head_follows_a_push_without_lm_head(engine, model, weights_restored) -> None:
    """A tied checkpoint carries the embedding only (as safetensors files of tied models do, and
    some vLLM loaders skip ``lm_head.*`` when tied): the output head must still follow it."""
    if type(engine).__name__ != "VLLMEngine":
        pytest.skip("vllm only")
    assert model.config.tie_word_embeddings
    _perturb(model, 0.3, seed=3)
    engine.sync_weights((k, v) for k, v in model.state_dict().items() if k != "lm_head.weight")
    gen = torch.Generator().manual_seed(1)
    batch = engine.generate(PROMPTS, n=8, temperature=1.0, max_new_tokens=6, generator=gen)
    diff = (_trainer_logp(model, batch, 1.0) - batch.engine_logp).abs()
    assert float(diff[batch.response_mask.bool()].max()) < 1e-4


def test_vllm_prompt_past_max_model_len_is_input_error(engine) -> None:
    if type(engine).__name__ != "VLLMEngine":
        pytest.skip("vllm only")
    with pytest.raises(InputError, match=r"job.vllm.max_model_len: a prompt of 121 tokens"):
        engine.generate([TOK.encode_prompt("1" * 120)], n=1, temperature=1.0, max_new_tokens=8)
