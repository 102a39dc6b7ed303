"""The job's training side on the tiny policy (CPU, one thread): micro-batching equals the unsplit
step, precision modes, gradient checkpointing, LoRA, chat templates, logged eval samples, and
warm-worker hygiene (flat memory over 20 jobs, no job-to-job leaks)."""

from __future__ import annotations

import ctypes
import gc
import math
import string
import sys

import psutil
import pytest
import torch

import sweeper.rl.job as job_module
from sweeper.config.job import SAMPLES_KEY, PolicyConfig, RLVRJob, TinyPolicyConfig
from sweeper.config.loss import AGGREGATIONS, LOSS_PARAMS
from sweeper.errors import InputError
from sweeper.rl.job import JobContext, JobRunner
from sweeper.rl.policy import (
    BasePolicy,
    CharTokenizer,
    HFTokenizer,
    build_tiny_model,
    prompt_encoder,
)
from sweeper.rl.rollout import RolloutBatch

torch.set_num_threads(1)

SMALL = {
    "steps": 4,
    "prompts_per_step": 4,
    "group_size": 4,
    "mini_batches": 2,
    "max_new_tokens": 5,
    "eval": {"every": 2, "prompts": 8, "samples": 4, "ks": [1, 4]},
}
TIMING = {"time_generate_s", "time_old_logp_s", "time_update_s", "tokens_per_s", "time_eval_s"}
CPU = torch.device("cpu")

# Loss settings under which each kind's mechanism acts on the perturbed batch below.
ACTIVE = {
    "ppo_clip": {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 1.5},
    "nsr": {"rescue_prob": 0.5, "rescue_margin": 0.5},
    "clip_cov": {"cov_ratio": 0.2, "cov_lb": -100.0, "cov_ub": 100.0},
    "kl_cov": {"cov_ratio": 0.2, "kl_coef": 0.5},
    "gppo": {"beta_low": 0.5, "beta_high": 2.0},
    "gspo": {"eps_low": 0.05, "eps_high": 0.05},
}
CASES = [(k, a) for k in sorted(LOSS_PARAMS) if k != "gspo" for a in AGGREGATIONS] + [
    ("gspo", None)  # gspo always aggregates seq-mean-token-mean
]


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    def same(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or x == y
        return x == y

    a, b = _strip(a), _strip(b)
    return len(a) == len(b) and all(
        ra.keys() == rb.keys() and all(same(ra[k], rb[k]) for k in ra)
        for ra, rb in zip(a, b, strict=True)
    )


def _context(runner: JobRunner, job: dict, seed: int = 0) -> JobContext:
    return runner.context(RLVRJob.model_validate(job), seed, CPU)


def _off_policy_batch(
    ctx: JobContext,
) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 16-row rollout of the reset policy with old log-probs perturbed off-policy (so the
    clip, rescue and covariance mechanisms act) and GRPO advantages from random rewards."""
    g = torch.Generator().manual_seed(1)
    prompts = [ctx.encode(p.prompt) for p in ctx.task.eval_problems(4)]
    batch = ctx.engine.generate(prompts, n=4, temperature=1.0, max_new_tokens=5, generator=g)
    logp, _ = job_module.logp_and_entropy(ctx.model, batch, 1.0)
    mask = batch.response_mask
    old = torch.where(mask.bool(), logp + 0.4 * torch.randn(logp.shape, generator=g), 0.0)
    rewards = torch.randint(0, 2, (batch.size,), generator=g).float()
    adv = (rewards - rewards.view(4, 4).mean(1).repeat_interleave(4)) / 0.5
    return batch, old, adv, mask


def _params(ctx: JobContext) -> list[torch.Tensor]:
    return [p.detach().clone() for p in ctx.policy.trainable_parameters()]


def _grads_at_step(ctx: JobContext) -> list[torch.Tensor]:
    """Filled with the (clipped) gradients the optimizer's next step sees."""
    seen: list[torch.Tensor] = []
    step = ctx.optimizer.step

    def recording_step(*args, **kwargs):
        seen.extend(p.grad.detach().clone() for p in ctx.policy.trainable_parameters())
        return step(*args, **kwargs)

    ctx.optimizer.step = recording_step  # type: ignore[method-assign]
    return seen


# --------------------------------------------------------------------------- micro-batching


@pytest.mark.parametrize(("kind", "agg"), CASES)
def test_micro_batched_step_equals_the_full_mini_batch_step(runner, kind, agg) -> None:
    """One optimizer step in micro-batches of 3 (uneven: 3,3,3,3,3,1) leaves the parameters
    (fp32, 1e-6) and the step's loss and metrics where the unsplit step does."""
    loss = {"kind": kind, **ACTIVE[kind], **({"agg": agg} if agg else {})}
    full = _context(runner, {**SMALL, "loss": loss})
    batch, old, adv, mask = _off_policy_batch(full)
    want_grads = _grads_at_step(full)
    want = job_module._update(full, batch, old, adv, mask, step=0, update=0)
    want_params = _params(full)
    micro = _context(runner, {**SMALL, "loss": loss, "micro_batch_size": 3})  # resets weights
    got_grads = _grads_at_step(micro)
    got = job_module._update(micro, batch, old, adv, mask, step=0, update=0)
    # The accumulated gradient is the unsplit one (up to float summation order) ...
    for g, h in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, h, atol=1e-8, rtol=1e-5)
    # ... and so are the parameters after the AdamW step, to 1e-6. Adam's first step is
    # lr·g/(|g|+eps): where |g| is near eps (1e-8) it turns float summation noise into a step of
    # up to lr, so those elements (|g| < 1e-6; a handful of 16k) are held to |step| <= lr only.
    lr = full.job.lr
    for p, q, g in zip(_params(micro), want_params, want_grads, strict=True):
        stable = g.abs() > 1e-6
        torch.testing.assert_close(p[stable], q[stable], atol=1e-6, rtol=0)
        if (~stable).any():
            assert (p[~stable] - q[~stable]).abs().max().item() <= 2 * lr
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
    assert want["clip_low_frac"] + want["clip_high_frac"] + want["cov_selected_frac"] > 0


def test_micro_batched_job_rows_match(runner) -> None:
    """The train columns of a whole job step agree with and without micro-batching."""
    job = {**SMALL, "steps": 1, "loss": {"kind": "clip_cov", "cov_ratio": 0.1, "cov_lb": -10.0}}
    full = list(runner.run(job, seed=0))
    micro = list(runner.run({**job, "micro_batch_size": 3}, seed=0))
    for key in ("loss", "grad_norm", "entropy", "clip_low_frac", "cov_selected_frac"):
        assert micro[0][key] == pytest.approx(full[0][key], rel=1e-5, abs=1e-7), key
    assert micro[0]["reward_mean"] == full[0]["reward_mean"]


# --------------------------------------------------------------------------- precision


def test_bf16_mixed_keeps_fp32_master_weights_and_tracks_fp32(runner) -> None:
    """bf16-mixed: the model computes in bfloat16 (autocast) while parameters and AdamW state
    stay float32, and its losses over 5 updates on one batch stay close to fp32's."""
    fp32 = _context(runner, SMALL)
    batch, old, adv, mask = _off_policy_batch(fp32)
    want = [job_module._update(fp32, batch, old, adv, mask, 0, i)["loss"] for i in range(5)]

    mixed = _context(runner, {**SMALL, "precision": "bf16-mixed"})
    seen: set[torch.dtype] = set()
    hook = mixed.model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: seen.add(out.dtype)
    )
    try:
        got = [job_module._update(mixed, batch, old, adv, mask, 0, i)["loss"] for i in range(5)]
    finally:
        hook.remove()
    assert seen == {torch.bfloat16}  # the forwards really ran in bfloat16
    params = mixed.policy.trainable_parameters()
    assert {p.dtype for p in params} == {torch.float32}
    state = [mixed.optimizer.state[p] for p in params]
    assert {s["exp_avg"].dtype for s in state} == {torch.float32}
    assert {s["exp_avg_sq"].dtype for s in state} == {torch.float32}
    scale = max(abs(v) for v in want)
    for w, g in zip(want, got, strict=True):
        assert abs(w - g) <= 0.05 * scale + 1e-3, (want, got)
    # and it learns the same way: the loss moves by about as much over the 5 updates
    assert (got[0] - got[-1]) == pytest.approx(want[0] - want[-1], rel=0.25, abs=0.01)


def test_bf16_keeps_bfloat16_weights_and_policy_dtype_rule(runner) -> None:
    pure = _context(runner, {**SMALL, "precision": "bf16"})
    assert {p.dtype for p in pure.policy.trainable_parameters()} == {torch.bfloat16}
    legacy = RLVRJob.model_validate({**SMALL, "policy": {"dtype": "bfloat16"}})
    assert (legacy.param_dtype, legacy.autocast_dtype) == ("bfloat16", None)
    rows = list(runner.run({**SMALL, "steps": 1, "precision": "bf16-mixed"}, seed=0))
    assert math.isfinite(rows[0]["loss"]) and math.isfinite(rows[1]["mean_at_n"])


# --------------------------------------------------------------------------- checkpointing


def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(runner) -> None:
    plain = _context(runner, SMALL)
    batch, old, adv, mask = _off_policy_batch(plain)
    job_module._update(plain, batch, old, adv, mask, 0, 0)
    want = _params(plain)

    ckpt = _context(runner, {**SMALL, "policy": {"gradient_checkpointing": True}})
    calls = []
    attn = ckpt.model.model.layers[0].self_attn
    hook = attn.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    try:
        job_module._update(ckpt, batch, old, adv, mask, 0, 0)
    finally:
        hook.remove()
    # forward once with grad, then once more inside backward (the recomputation)
    assert len(calls) == 2
    for p, q in zip(_params(ckpt), want, strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert not attn.training and not ckpt.model.model.layers[0].mlp.training  # no dropout


# --------------------------------------------------------------------------- LoRA

LORA = {**SMALL, "policy": {"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}}


def test_lora_job_trains_only_the_adapter(runner) -> None:
    ctx = _context(runner, LORA)
    names = {n for n, p in ctx.model.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert all(("q_proj" in n or "v_proj" in n) for n in names)
    adapter = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if n in names}
    frozen = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if n not in names}
    rows = list(runner.run({**LORA, "lr": 1e-2}, seed=0))
    assert all(math.isfinite(r["loss"]) for r in rows[:-1])
    after = dict(ctx.model.named_parameters())
    assert all(torch.equal(after[n], frozen[n]) for n in frozen)  # base weights untouched
    assert any(not torch.equal(after[n], adapter[n]) for n in adapter)  # the adapter trained
    # The merged weights are a plain model's state_dict that computes the same function.
    base = ctx.policy.base
    merged = ctx.policy.merged_weights()
    assert merged.keys() == base.state.keys()
    plain = base.build_model("cpu", torch.float32)
    plain.load_state_dict(merged)
    ids = torch.tensor([[1, 5, 6, 14, 7, 8, 15]])
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids).logits, ctx.model(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )
        assert not torch.allclose(plain.model.layers[0].self_attn.q_proj.weight,
                                  base.state["model.layers.0.self_attn.q_proj.weight"])  # fmt: skip


def test_two_lora_jobs_on_one_worker_start_from_the_same_adapter(runner, cache_dir) -> None:
    def start_adapter(r: JobRunner) -> dict[str, torch.Tensor]:
        ctx = r.context(RLVRJob.model_validate(LORA), 0, CPU)
        return {n: p.detach().clone() for n, p in ctx.model.named_parameters() if p.requires_grad}

    first = start_adapter(runner)
    list(runner.run({**LORA, "lr": 1e-2}, seed=3))  # a job that moves the adapter
    second = start_adapter(runner)
    fresh = start_adapter(JobRunner(cache_dir=cache_dir))  # another worker
    for n in first:
        assert torch.equal(first[n], second[n]) and torch.equal(first[n], fresh[n])
    assert any(n.endswith("lora_A.default.weight") and first[n].abs().sum() > 0 for n in first)
    a = list(runner.run(LORA, seed=1))
    b = list(runner.run(LORA, seed=1))
    assert _same_rows(a, b)


# --------------------------------------------------------------------------- chat templates

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_policy_dir(tmp_path_factory) -> str:
    """An HF policy directory built offline: a tiny Llama over printable ASCII and a tokenizer
    that carries a chat template."""
    path = tmp_path_factory.mktemp("chat_policy")
    chars = CharTokenizer(string.printable)
    torch.manual_seed(0)
    build_tiny_model(TinyPolicyConfig(d_model=32), chars.vocab_size).save_pretrained(path)
    tok = chars.to_hf()
    tok.chat_template = TEMPLATE
    tok.save_pretrained(path)
    return str(path)


def test_templated_prompt_is_exactly_the_tokenizers_template(chat_policy_dir) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_policy_dir, local_files_only=True)
    hf = HFTokenizer(tok)
    encode = prompt_encoder(hf, PolicyConfig(name=chat_policy_dir, system_prompt="Be exact."))
    messages = [
        {"role": "system", "content": "Be exact."},
        {"role": "user", "content": "12+34="},
    ]
    want = tok.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert encode("12+34=") == list(want)
    text = "<|system|>Be exact.<|end|><|user|>12+34=<|end|><|assistant|>"
    assert encode("12+34=") == tok(text, add_special_tokens=False)["input_ids"]
    # Default: on when the tokenizer has a template; false: the raw prompt (with BOS).
    assert (
        prompt_encoder(hf, PolicyConfig(name=chat_policy_dir))("7")
        == tok("<|user|>7<|end|><|assistant|>", add_special_tokens=False)["input_ids"]
    )
    raw = prompt_encoder(hf, PolicyConfig(name=chat_policy_dir, chat_template=False))
    assert raw("7") == hf.encode_prompt("7")


def test_chat_template_without_one_is_input_error() -> None:
    chars = CharTokenizer("0123456789+=")
    base = BasePolicy("tiny", chars, {}, lambda: torch.nn.Linear(1, 1))
    with pytest.raises(InputError, match="chat template"):
        prompt_encoder(base.tokenizer, PolicyConfig(chat_template=True))
    with pytest.raises(InputError, match="system_prompt"):
        prompt_encoder(base.tokenizer, PolicyConfig(system_prompt="hi"))
    assert prompt_encoder(chars, PolicyConfig())("1+2=") == chars.encode_prompt("1+2=")


def test_job_with_a_chat_policy_logs_samples(runner, chat_policy_dir) -> None:
    job = {
        **SMALL,
        "steps": 1,
        "policy": {"name": chat_policy_dir, "system_prompt": "Add."},
        "eval": {"every": 1, "prompts": 3, "samples": 2, "ks": [1], "log_samples": 5},
    }
    ctx = _context(runner, job)
    problem = ctx.task.eval_problems(1)[0]
    assert ctx.encode(problem.prompt) == ctx.tokenizer.encode_chat(problem.prompt, "Add.")
    rows = list(runner.run(job, seed=0))
    for row in rows:  # steps 0 and 1 are eval steps
        samples = row[SAMPLES_KEY]
        assert [s["sample"] for s in samples] == [0, 1, 2, 3, 4]
        # prompt j % 3, its (j // 3)-th sample: the first three cover three prompts
        prompts = [p.prompt for p in ctx.task.eval_problems(3)]
        assert [s["prompt"] for s in samples] == [prompts[j % 3] for j in range(5)]
        for s in samples:
            assert isinstance(s["response"], str) and s["reward"] in (0.0, 1.0)
            assert s["correct"] == (s["reward"] == 1.0)
        assert list(row)[:-1] == job_module.row_keys(RLVRJob.model_validate(job))


def test_logging_samples_leaves_a_random_reward_job_unchanged(runner) -> None:
    job = {**SMALL, "task": {"kind": "random", "p": 0.5}}
    plain = list(runner.run(job, seed=4))
    logged = list(runner.run({**job, "eval": {**SMALL["eval"], "log_samples": 4}}, seed=4))
    assert all(len(r[SAMPLES_KEY]) == 4 for r in logged if r["step"] in (0, 2, 4))
    stripped = [{k: v for k, v in r.items() if k != SAMPLES_KEY} for r in logged]
    assert _same_rows(plain, stripped)


# --------------------------------------------------------------------------- warm worker


def test_twenty_jobs_on_one_worker_keep_memory_flat(cache_dir) -> None:
    """20 consecutive jobs (full weights and LoRA, fp32 and bf16-mixed, micro-batched,
    checkpointed) on one warm runner: the process's RSS stays flat."""
    runner = JobRunner(cache_dir=cache_dir)
    variants = [
        SMALL,
        {**SMALL, "micro_batch_size": 3, "precision": "bf16-mixed"},
        LORA,
        {**SMALL, "policy": {"gradient_checkpointing": True}, "loss": {"kind": "clip_cov"}},
    ]
    process = psutil.Process()
    libc = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None

    def rss_after(i: int) -> float:
        list(runner.run({**variants[i % len(variants)], "steps": 2}, seed=i))
        gc.collect()
        if libc is not None:
            libc.malloc_trim(0)  # measure memory in use, not the allocator's high-water mark
        return process.memory_info().rss / 2**20

    # Warm-up: two rounds of every variant fill the one-time caches (kernels, oneDNN
    # primitives for the shapes seen, autocast), then 20 jobs are measured.
    for i in range(2 * len(variants)):
        rss_after(i)
    rss = [rss_after(i) for i in range(8, 28)]
    growth, late = max(rss) - rss[0], max(rss[10:]) - rss[10]
    print(f"RSS over 20 jobs (MiB): {[round(x, 1) for x in rss]}; growth {growth:.1f}")
    # A leaked optimizer state (4 MiB here) or set of gradients (2 MiB) per job would climb
    # 20-40 MiB over the last 10 jobs; what is left is a one-time step as a cache fills.
    assert late < 4.0 and growth < 24.0, rss


def test_rows_do_not_depend_on_the_jobs_before(cache_dir) -> None:
    """B alone on a fresh worker == B after A on a warm one (every row, timing aside), with A
    touching everything a job can: another loss, precision, micro-batches, checkpointing, a
    stochastic loss, another seed and lr, the task's reward RNG, and a LoRA job."""
    job_b = {**SMALL, "task": {"kind": "random", "p": 0.5}, "loss": {"kind": "nsr"}}
    job_a = {
        **job_b,
        "lr": 3e-4,
        "precision": "bf16-mixed",
        "micro_batch_size": 3,
        "policy": {"gradient_checkpointing": True},
        "loss": {"kind": "nsr", "rescue_prob": 1.0},
    }
    alone = list(JobRunner(cache_dir=cache_dir).run(job_b, seed=0))
    warm = JobRunner(cache_dir=cache_dir)
    list(warm.run(job_a, seed=5))
    list(warm.run({**LORA, "task": job_b["task"]}, seed=6))
    after = list(warm.run(job_b, seed=0))
    assert _same_rows(alone, after)
