"""Benchmark: one GRPO step of sweeper's job engine vs TRL's GRPOTrainer, same tiny model, CPU.

Run:  .venv/bin/python bench/grpo_step.py [--steps 12] [--warmup 3] [--threads 1] [--no-trl]
      (``make bench`` runs it too; TRL comes from the ``bench`` extra: pip install -e ".[bench]")

What is timed: one GRPO step = sample ``prompts`` prompts x ``group`` generations (up to
``max_new`` tokens), score, old log-probs, then ``mini_batches`` optimizer steps (AdamW, grad
clip 1.0). Ours: ``sweeper.rl.job.JobRunner`` on the built-in tiny policy (2-layer Llama, width
128, char vocab of 16, warm-started on 2-digit addition), per-phase times from its rows. Peer:
TRL ``GRPOTrainer`` on the SAME model weights and tokenizer (the char tokenizer as a
``PreTrainedTokenizerFast``), the same prompts x generations, ``max_completion_length`` and
mini-batch split (``steps_per_generation`` = mini-batches, so one generation feeds as many
optimizer steps as ours), on CPU, timed per generation cycle with a trainer callback. Medians
over ``--steps`` steps after ``--warmup`` warm-up steps. Prints our_step_s / trl_step_s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import warnings
from typing import Any

import torch

from sweeper.config.job import RLVRJob
from sweeper.rl.job import JobRunner


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="measured steps (median)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="generations per prompt")
    ap.add_argument("--max-new", type=int, default=6, help="max new tokens")
    ap.add_argument("--mini-batches", type=int, default=4, help="optimizer steps per rollout")
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL peer")
    ap.add_argument("--cache", default=None, help="tiny-policy cache dir (default SWEEPER_CACHE)")
    return ap.parse_args()


def job_dict(args: argparse.Namespace) -> dict[str, Any]:
    total = args.warmup + args.steps
    return {
        "steps": total,
        "prompts_per_step": args.prompts,
        "group_size": args.group,
        "max_new_tokens": args.max_new,
        "mini_batches": args.mini_batches,
        "lr": 1e-4,
        "threads": args.threads,
        "device": "cpu",
        "advantage": "grpo",
        "loss": {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2, "agg": "token-mean"},
        # Eval only at step 0 and the last step (not timed: only the train phases are).
        "eval": {"every": total, "prompts": 8, "samples": 2, "ks": [1]},
    }


# --------------------------------------------------------------------------- ours


def bench_ours(args: argparse.Namespace, runner: JobRunner) -> dict[str, float]:
    rows = list(runner.run(job_dict(args), seed=0))[args.warmup : -1]
    phases = {
        k: [r[k] for r in rows] for k in ("time_generate_s", "time_old_logp_s", "time_update_s")
    }
    step = [sum(v) for v in zip(*phases.values(), strict=True)]
    tokens = [r["response_len"] * args.prompts * args.group for r in rows]
    out = {k: statistics.median(v) for k, v in phases.items()}
    out["step_s"] = statistics.median(step)
    out["tokens_per_s"] = statistics.median(t / s for t, s in zip(tokens, step, strict=True))
    out["response_len"] = statistics.mean(r["response_len"] for r in rows)
    return out


# --------------------------------------------------------------------------- TRL


def bench_trl(args: argparse.Namespace, runner: JobRunner) -> dict[str, float]:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    job = RLVRJob.model_validate(job_dict(args))
    loaded = runner.policy(job, torch.device("cpu"))
    loaded.base.reset(loaded.model)
    model = loaded.base.build_model("cpu")  # an independent copy with the same base weights
    tokenizer = loaded.base.tokenizer.to_hf()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    task = runner.task(job)
    problems = task.train_problems(random.Random(0), 4096)
    dataset = Dataset.from_dict({"prompt": [p.prompt for p in problems]})

    def addition_reward(completions: list[str], prompts: list[str], **_: Any) -> list[float]:
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            a, b = prompt.removesuffix("=").split("+")
            out.append(1.0 if completion.strip() == str(int(a) + int(b)) else 0.0)
        return out

    class CycleTimer(TrainerCallback):
        """Wall time per optimizer step; a generation cycle is mini_batches consecutive steps."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.start = 0.0

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.ends.append(time.perf_counter())

    cycles = args.warmup + args.steps
    completions = args.prompts * args.group
    with tempfile.TemporaryDirectory() as out_dir:
        config = GRPOConfig(
            output_dir=out_dir,
            use_cpu=True,
            bf16=False,
            per_device_train_batch_size=completions // args.mini_batches,
            steps_per_generation=args.mini_batches,  # one generation -> mini_batches updates
            num_generations=args.group,
            max_completion_length=args.max_new,
            max_steps=cycles * args.mini_batches,
            learning_rate=1e-4,
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
            reward_funcs=addition_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)  # its end-of-training log dict is noise here
        trainer.train()
    ends = [timer.start, *timer.ends]
    per_cycle = [
        ends[(c + 1) * args.mini_batches] - ends[c * args.mini_batches] for c in range(cycles)
    ]
    return {"step_s": statistics.median(per_cycle[args.warmup :]), "cycles": float(cycles)}


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    runner = JobRunner(cache_dir=args.cache)
    # Build (or load) the warm-started base first so no side pays for it.
    runner.policy(RLVRJob.model_validate(job_dict(args)), torch.device("cpu"))

    print(
        f"GRPO step: {args.prompts} prompts x {args.group} generations, max {args.max_new} new "
        f"tokens, {args.mini_batches} mini-batches, CPU, {args.threads} thread(s); "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    ours = bench_ours(args, runner)
    print(
        f"sweeper : step {ours['step_s'] * 1e3:7.1f} ms  (generate {ours['time_generate_s'] * 1e3:.1f}"
        f" | old logp {ours['time_old_logp_s'] * 1e3:.1f} | update {ours['time_update_s'] * 1e3:.1f})"
        f"  {ours['tokens_per_s']:.0f} response tokens/s, mean response {ours['response_len']:.2f}"
    )
    if args.no_trl:
        return
    try:
        trl = bench_trl(args, runner)
    except Exception as err:  # report, do not hide, why the peer could not run
        print(f"TRL     : could not run ({type(err).__name__}: {err}); our numbers only")
        return
    import trl as trl_pkg

    print(
        f"TRL {trl_pkg.__version__}: step {trl['step_s'] * 1e3:7.1f} ms  (GRPOTrainer, per generation cycle)"
    )
    print(f"ratio   : our_step_s / trl_step_s = {ours['step_s'] / trl['step_s']:.3f}")


if __name__ == "__main__":
    main()
