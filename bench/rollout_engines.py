"""Benchmark: one GRPO step's rollouts with the vLLM engine vs the HF engine, same model.

Run:  .venv/bin/python bench/rollout_engines.py            # CPU: the tiny policy
      .venv/bin/python bench/rollout_engines.py --gpu      # CUDA: a 0.5B-shaped model, bf16
      (vLLM comes from `make setup` on CPU machines, `pip install -e ".[vllm]"` on GPU ones)

What is timed: sampling ``prompts`` prompts x ``group`` responses (up to ``max_new`` tokens,
temperature 1) through ``RolloutEngine.generate``, as one GRPO step does. For vLLM the weight
push that precedes every step's rollouts (``sync_weights``: the trainer's weights into the running
engine, then the prefix-cache reset) is timed too and counted in its step. Both engines hold the
same weights. Medians over ``--repeats`` after ``--warmup``. Also printed: vLLM's engine start-up
(once per worker and base policy) against the per-job reset (one push of the base weights).

CPU: the built-in tiny policy (2-layer Llama, width 128, char vocabulary, warm-started on 2-digit
addition), addition prompts, float32, one torch thread. GPU (``--gpu``): a model with
Qwen2.5-0.5B's shape built from its config (random weights, no download) in bfloat16, random
prompts of ``--prompt-len`` tokens; with random weights EOS is rare, so both engines decode
about ``max_new`` tokens per row.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
import warnings
from typing import Any

import torch

from sweeper.rl.engines import HFEngine, VLLMEngine
from sweeper.rl.engines.base import RolloutEngine


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="CUDA, 0.5B-shaped model, bf16")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (16 CPU, 64 GPU)")
    ap.add_argument("--group", type=int, default=8, help="responses per prompt")
    ap.add_argument("--max-new", type=int, default=None, help="max new tokens (6 CPU, 256 GPU)")
    ap.add_argument("--prompt-len", type=int, default=128, help="GPU: prompt tokens")
    ap.add_argument("--repeats", type=int, default=10, help="measured steps (median)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--cache", default=None, help="tiny-policy cache dir (default SWEEPER_CACHE)")
    args = ap.parse_args()
    args.prompts = args.prompts or (64 if args.gpu else 16)
    args.max_new = args.max_new or (256 if args.gpu else 6)
    return args


# --------------------------------------------------------------------------- the two set-ups


def tiny_setup(args: argparse.Namespace) -> dict[str, Any]:
    """The tiny policy on CPU, its tokenizer ids and addition prompts."""
    from sweeper.config.job import RLVRJob
    from sweeper.rl.job import JobRunner

    job = RLVRJob.model_validate({"device": "cpu", "engine": "vllm"})
    runner = JobRunner(cache_dir=args.cache)
    loaded = runner.policy(job, torch.device("cpu"))
    loaded.base.reset(loaded.model)
    tok = loaded.base.tokenizer
    problems = runner.task(job).train_problems(random.Random(0), args.prompts)
    return {
        "model": loaded.model,
        "eos": tok.eos_id,
        "pad": tok.pad_id,
        "prompts": [tok.encode_prompt(p.prompt) for p in problems],
        "options": {"max_model_len": 64},
        "name": "tiny (2-layer Llama, width 128, vocab 16), float32",
    }


def qwen_shaped_setup(args: argparse.Namespace) -> dict[str, Any]:
    """Qwen2.5-0.5B's architecture with random weights, bf16 on CUDA, random prompts."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(  # Qwen2.5-0.5B-Instruct's config.json
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151645,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(device="cuda", dtype=torch.bfloat16).eval()
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 151643, (args.prompts, args.prompt_len), generator=gen).tolist()
    return {
        "model": model,
        "eos": 151645,
        "pad": 151643,
        "prompts": prompts,
        "options": {"max_model_len": args.prompt_len + args.max_new + 16},
        "name": "Qwen2.5-0.5B-shaped (random weights), bfloat16",
    }


# --------------------------------------------------------------------------- timing


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_steps(
    engine: RolloutEngine, setup: dict[str, Any], args: argparse.Namespace, push: bool
) -> dict[str, float]:
    """Median generate (and push) seconds and response tokens per step."""
    model, gen = setup["model"], torch.Generator(device=next(setup["model"].parameters()).device)
    gen.manual_seed(0)
    pushes, generates, cpus, tokens = [], [], [], []
    for i in range(args.warmup + args.repeats):
        _sync()
        start, cpu = time.perf_counter(), time.process_time()
        if push:
            engine.sync_weights(model.state_dict().items())
            _sync()
        mid = time.perf_counter()
        batch = engine.generate(
            setup["prompts"],
            n=args.group,
            temperature=1.0,
            max_new_tokens=args.max_new,
            generator=gen,
        )
        _sync()
        end = time.perf_counter()
        if i >= args.warmup:
            pushes.append(mid - start)
            generates.append(end - mid)
            cpus.append((time.process_time() - cpu) / (end - start))
            tokens.append(float(batch.response_mask.sum()))
    return {
        "push_s": statistics.median(pushes),
        "generate_s": statistics.median(generates),
        "step_s": statistics.median(p + g for p, g in zip(pushes, generates, strict=True)),
        "tokens": statistics.mean(tokens),
        "cores": statistics.median(cpus),  # process CPU time / wall: threads in use
    }


def device_name(gpu: bool) -> str:
    if gpu:
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor() or "CPU"
    return f"{model}, {os.cpu_count()} cores"


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    setup = qwen_shaped_setup(args) if args.gpu else tiny_setup(args)
    model = setup["model"]
    print(
        f"rollouts of one GRPO step: {args.prompts} prompts x {args.group} responses, max "
        f"{args.max_new} new tokens, temperature 1; {setup['name']}; {device_name(args.gpu)}; "
        f"median of {args.repeats} after {args.warmup} warm-up"
    )
    hf = HFEngine(model, setup["eos"], setup["pad"])
    ours = time_steps(hf, setup, args, push=False)

    start = time.perf_counter()
    vllm = VLLMEngine(model, setup["eos"], setup["pad"], options=setup["options"])
    started = time.perf_counter() - start
    resets = []  # what a new job of the same base pays instead of a start: one push
    for _ in range(3):
        _sync()
        begin = time.perf_counter()
        vllm.sync_weights(model.state_dict().items())
        _sync()
        resets.append(time.perf_counter() - begin)
    reset = statistics.median(resets)
    theirs = time_steps(vllm, setup, args, push=True)
    vllm.close()

    for name, r in (("hf  ", ours), ("vllm", theirs)):
        print(
            f"{name}: step {r['step_s'] * 1e3:8.1f} ms (generate {r['generate_s'] * 1e3:.1f} | push"
            f" {r['push_s'] * 1e3:.1f})  {r['tokens'] / r['step_s']:8.0f} response tokens/s,"
            f" {r['tokens'] / (args.prompts * args.group):.2f} tokens/response,"
            f" {r['cores']:.2f} cores busy"
        )
    print(
        f"vllm engine start-up {started:.1f} s; per-job reset (base weights push) {reset * 1e3:.1f} ms"
    )
    print(f"ratio vllm_step_s / hf_step_s = {theirs['step_s'] / ours['step_s']:.2f}")


if __name__ == "__main__":  # vLLM may spawn processes: keep the entry point guarded
    main()
