"""Benchmark: one GRPO step of a real-model-shaped policy, sweeper's job vs TRL's GRPOTrainer.

Run (GPU):  .venv/bin/python bench/grpo_step_real.py                      # Qwen2.5-0.5B shape
     (CPU):  .venv/bin/python bench/grpo_step_real.py --shape tiny --device cpu   # a quick check
     Options: --steps 4 --warmup 1 --prompts 8 --group 8 --max-new 256 --mini-batches 4
              --micro 4 --no-trl

The model is built from a ``transformers`` ``Qwen2Config`` with Qwen2.5-0.5B's published shape
(24 layers, width 896, 14 heads / 2 KV heads, MLP 4864, vocab 151,936, tied embeddings) and
random weights -- nothing is downloaded. The tokenizer is built offline: one token per printable
character plus filler tokens up to the vocabulary size (so any sampled id decodes). Both sides get
the same saved model directory, tokenizer, prompts ("Question: what is a+b?\\nAnswer:"), reward (a
deterministic function of the response text, so groups have non-zero advantages), prompts x
generations, ``max_new`` tokens, and the same update: ``mini_batches`` AdamW steps per rollout
batch, each accumulated over micro-batches of ``micro`` sequences, bf16 mixed precision (fp32
master weights, bf16 autocast), gradient checkpointing, PPO clip 0.2, no KL term, grad clip 1.

Ours: ``sweeper.rl.job.JobRunner`` with ``precision: bf16-mixed``, ``micro_batch_size``,
``policy.gradient_checkpointing``; a step is generate + old log-probs + updates (from its rows).
TRL: ``GRPOTrainer`` with ``bf16=True``, ``gradient_checkpointing=True``,
``per_device_train_batch_size=micro``, ``gradient_accumulation_steps`` = mini-batch / micro and
``steps_per_generation`` = batch / micro (so one generation feeds ``mini_batches`` optimizer
steps), timed per generation cycle with a callback. Medians after warm-up; on CUDA also the peak
allocated memory of each side. Prints our_step_s / trl_step_s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B (config.json of the published model)
    "qwen0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    # the same architecture, small enough for a CPU check
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 2048,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}
SPECIALS = ["<|endoftext|>", "<|pad|>"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen0.5b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=4, help="measured steps (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="generations per prompt")
    ap.add_argument("--max-new", type=int, default=256, help="max new tokens")
    ap.add_argument("--mini-batches", type=int, default=4, help="optimizer steps per rollout")
    ap.add_argument("--micro", type=int, default=4, help="sequences per forward/backward")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL peer")
    args = ap.parse_args()
    batch = args.prompts * args.group
    if batch % args.mini_batches or (batch // args.mini_batches) % args.micro:
        ap.error("prompts*group must split into mini-batches that split into micro-batches")
    return args


# --------------------------------------------------------------------------- shared pieces


def build_policy_dir(shape: str, root: Path) -> Path:
    """Save a randomly initialised Qwen2 model of ``shape`` and an offline tokenizer to ``root``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    cfg = SHAPES[shape]
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    for i in range(len(vocab), cfg["vocab_size"]):
        vocab[f"<x{i}>"] = i
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|pad|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    config = Qwen2Config(**cfg, eos_token_id=0, pad_token_id=1, bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = 0
    model.generation_config.pad_token_id = 1
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def prompt_text(a: int, b: int) -> str:
    return f"Question: what is {a}+{b}?\nAnswer:"


def reward_of(response: str) -> float:
    """A deterministic, response-dependent reward (about half the responses get 1)."""
    return float(sum(map(ord, response)) % 2)


class BenchTask:
    """The task both sides see: addition questions, reward :func:`reward_of`."""

    alphabet = None

    def __init__(self) -> None:
        from sweeper.rl.tasks import Problem

        self._problem = Problem

    def train_problems(self, rng: random.Random, n: int) -> list[Any]:
        return [self._make(rng.randrange(100), rng.randrange(100)) for _ in range(n)]

    def eval_problems(self, n: int) -> list[Any]:
        return [self._make(i, i) for i in range(n)]

    def reward(self, problem: Any, response: str) -> float:
        return reward_of(response)

    def correct(self, problem: Any, response: str) -> bool:
        return response.strip() == problem.answer

    def supervised_target(self, problem: Any) -> str:
        return problem.answer

    def _make(self, a: int, b: int) -> Any:
        return self._problem(prompt=prompt_text(a, b), answer=str(a + b))


def make_task() -> BenchTask:
    """``task: {kind: user, fn: grpo_step_real:make_task}``."""
    return BenchTask()


def _peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")


# --------------------------------------------------------------------------- ours


def job_dict(args: argparse.Namespace, policy_dir: Path) -> dict[str, Any]:
    total = args.warmup + args.steps
    return {
        "steps": total,
        "device": "cuda" if args.device.startswith("cuda") else "cpu",
        "threads": args.threads,
        "policy": {"name": str(policy_dir), "gradient_checkpointing": True},
        "precision": "bf16-mixed",
        "micro_batch_size": args.micro,
        "task": {"kind": "user", "fn": "grpo_step_real:make_task"},
        "prompts_per_step": args.prompts,
        "group_size": args.group,
        "max_new_tokens": args.max_new,
        "mini_batches": args.mini_batches,
        "lr": 1e-6,
        "advantage": "grpo",
        "loss": {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2, "agg": "token-mean"},
        # eval only at step 0 and the end, on one prompt (untimed: only train phases count)
        "eval": {"every": total, "prompts": 1, "samples": 1, "ks": [1]},
    }


def bench_ours(args: argparse.Namespace, policy_dir: Path) -> dict[str, float]:
    from sweeper.rl.job import JobRunner

    runner = JobRunner()
    _peak_reset(args.device)
    rows = list(runner.run(job_dict(args, policy_dir), seed=0))[args.warmup : -1]
    keys = ("time_generate_s", "time_old_logp_s", "time_update_s")
    step = [sum(r[k] for k in keys) for r in rows]
    out = {k: statistics.median(r[k] for r in rows) for k in keys}
    out.update(
        step_s=statistics.median(step),
        response_len=statistics.mean(r["response_len"] for r in rows),
        peak_gib=_peak_gib(args.device),
    )
    return out


# --------------------------------------------------------------------------- TRL


def bench_trl(args: argparse.Namespace, policy_dir: Path) -> dict[str, float]:
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        PrinterCallback,
        TrainerCallback,
    )
    from trl import GRPOConfig, GRPOTrainer

    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    rng = random.Random(0)
    prompts = [prompt_text(rng.randrange(100), rng.randrange(100)) for _ in range(4096)]
    dataset = Dataset.from_dict({"prompt": prompts})

    def reward(completions: list[str], **_: Any) -> list[float]:
        return [reward_of(c) for c in completions]

    class CycleTimer(TrainerCallback):
        """Wall time per optimizer step; a generation cycle is mini_batches consecutive steps."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.start = 0.0

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    batch = args.prompts * args.group
    cycles = args.warmup + args.steps
    _peak_reset(args.device)
    with tempfile.TemporaryDirectory() as out_dir:
        config = GRPOConfig(
            output_dir=out_dir,
            use_cpu=not args.device.startswith("cuda"),
            bf16=True,  # mixed: fp32 master weights, bf16 autocast (as our bf16-mixed)
            gradient_checkpointing=True,
            per_device_train_batch_size=args.micro,
            gradient_accumulation_steps=batch // args.mini_batches // args.micro,
            steps_per_generation=batch // args.micro,  # one generation -> mini_batches updates
            num_generations=args.group,
            max_completion_length=args.max_new,
            max_steps=cycles * args.mini_batches,
            learning_rate=1e-6,
            max_grad_norm=1.0,
            lr_scheduler_type="constant",
            warmup_steps=0,
            beta=0.0,  # no reference model: ours has no KL term either
            epsilon=0.2,
            loss_type="grpo",
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            report_to="none",
            logging_steps=10_000,
            save_strategy="no",
            disable_dropout=True,
            seed=0,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        timer = CycleTimer()
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    ends = [timer.start, *timer.ends]
    m = args.mini_batches
    per_cycle = [ends[(c + 1) * m] - ends[c * m] for c in range(cycles)]
    return {
        "step_s": statistics.median(per_cycle[args.warmup :]),
        "peak_gib": _peak_gib(args.device),
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the user task's module
    device_name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{args.threads}"
    )
    with tempfile.TemporaryDirectory() as root:
        policy_dir = build_policy_dir(args.shape, Path(root))
        print(
            f"GRPO step, {args.shape} shape (random weights), {device_name}: {args.prompts} prompts"
            f" x {args.group} generations, max {args.max_new} new tokens, {args.mini_batches}"
            f" mini-batches of micro-batches of {args.micro}, bf16-mixed, gradient checkpointing;"
            f" median of {args.steps} steps after {args.warmup} warm-up"
        )
        ours = bench_ours(args, policy_dir)
        print(
            f"sweeper : step {ours['step_s']:8.3f} s  (generate {ours['time_generate_s']:.3f} |"
            f" old logp {ours['time_old_logp_s']:.3f} | update {ours['time_update_s']:.3f}),"
            f" mean response {ours['response_len']:.1f} tokens, peak {ours['peak_gib']:.2f} GiB"
        )
        if args.no_trl:
            return
        try:
            trl = bench_trl(args, policy_dir)
        except Exception as err:  # report, do not hide, why the peer could not run
            print(f"TRL     : could not run ({type(err).__name__}: {err}); our numbers only")
            return
    import trl as trl_pkg

    print(
        f"TRL {trl_pkg.__version__}: step {trl['step_s']:8.3f} s  (GRPOTrainer, per generation"
        f" cycle), peak {trl['peak_gib']:.2f} GiB"
    )
    print(f"ratio   : our_step_s / trl_step_s = {ours['step_s'] / trl['step_s']:.3f}")


if __name__ == "__main__":
    main()
