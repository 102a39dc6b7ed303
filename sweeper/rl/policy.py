"""Base policies: the built-in ``tiny`` CPU policy and Hugging Face causal LMs.

A sweep starts every trial from the same base policy. :func:`load_base_policy` returns a
:class:`BasePolicy` that keeps the base weights in host memory, so a worker builds (or loads) it
once and resets a model to it per job with one ``load_state_dict``.

``tiny``: a small ``LlamaForCausalLM`` built from a ``transformers`` ``LlamaConfig`` (no
download) with a :class:`CharTokenizer` over the task's alphabet. It is warm-started by supervised
training on correct answers (prompt -> answer + EOS, loss on the answer tokens only) until its
greedy accuracy on held-out prompts reaches ``tiny.warm_start_target`` (checked every
``WARM_START_CHECK_EVERY`` steps) or ``tiny.warm_start_steps`` is spent, so RL starts from a
policy that is right some of the time. The result is cached on disk
(``$SWEEPER_CACHE`` or ``~/.cache/sweeper``, under ``tiny/``) keyed by a hash of the tiny config,
the task config and :data:`FORMAT_VERSION`; writes are atomic (tmp file + ``os.replace``), so two
workers building it at once both end up with a valid file (the last write wins).

HF policies: ``policy.name`` is a hub name or a local directory, loaded with
``AutoModelForCausalLM`` / ``AutoTokenizer`` (``local_files_only`` for a directory, so nothing is
downloaded; a hub name uses the normal HF cache and honours ``HF_HUB_OFFLINE``).

:class:`LivePolicy` is the trained model of a worker: the base weights on a device in the job's
parameter dtype, either all trainable or frozen under a ``peft`` LoRA adapter; it resets per job
(all weights, or only the adapter), switches gradient checkpointing, and hands out the merged
weights in the base model's own naming (:meth:`LivePolicy.merged_weights`, for an engine that
keeps its own copy). :func:`prompt_encoder` turns a task prompt into ids, through the tokenizer's
chat template when the policy uses one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from sweeper.config.job import (
    AdditionTask,
    FileTask,
    LoRAConfig,
    PolicyConfig,
    RandomRewardTask,
    TaskConfig,
    TinyPolicyConfig,
)
from sweeper.errors import InputError
from sweeper.rl.rollout import HFEngine
from sweeper.rl.tasks import Problem, Task, tokenizer_alphabet

__all__ = [
    "FORMAT_VERSION",
    "LORA_INIT_SEED",
    "BasePolicy",
    "CharTokenizer",
    "HFTokenizer",
    "LivePolicy",
    "TokenizerLike",
    "build_tiny_model",
    "default_cache_dir",
    "greedy_accuracy",
    "load_base_policy",
    "prompt_encoder",
    "tiny_cache_key",
    "warm_start",
    "warm_start_identity",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Bumped whenever the tiny model, tokenizer or warm-start procedure changes (new cache key)."""

WARM_START_CHECK_EVERY = 50
"""Supervised steps between greedy-accuracy checks during the warm start."""

WARM_START_EVAL_PROMPTS = 128
"""Held-out prompts in each warm-start accuracy check (SE ~ 0.04 at 40 % accuracy)."""

WARM_START_SEED = 0
"""Seed of the warm start (init and data): the base is the same for every trial and seed."""

LORA_INIT_SEED = 0
"""Seed of every LoRA adapter's initialisation: all jobs (on any worker) start from one adapter."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- tokenizers


class TokenizerLike(Protocol):
    """What the job needs from a tokenizer (the char tokenizer and the HF adapter)."""

    pad_id: int
    eos_id: int
    vocab_size: int

    def encode_prompt(self, text: str) -> list[int]:
        """Prompt ids, with BOS first when the tokenizer uses one."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of response ids, special tokens dropped."""
        ...


class CharTokenizer:
    """One token per character of ``alphabet`` plus ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.

    Built offline from the task's alphabet (addition: ``0123456789+=``, vocab 16). Characters
    outside the alphabet encode to ``<unk>``.
    """

    PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
    SPECIALS = (PAD, BOS, EOS, UNK)

    def __init__(self, alphabet: str) -> None:
        chars = list(dict.fromkeys(alphabet))
        if not chars:
            raise InputError("tokenizer: empty alphabet")
        self.alphabet = "".join(chars)
        self.itos: list[str] = [*self.SPECIALS, *chars]
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
        self.vocab_size = len(self.itos)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text``, optionally with BOS first / EOS last."""
        ids = [self.stoi.get(c, self.unk_id) for c in text]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_prompt(self, text: str) -> list[int]:
        return self.encode(text, bos=True)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids if len(self.SPECIALS) <= i < self.vocab_size)

    def to_hf(self) -> Any:
        """The same vocabulary as a ``transformers.PreTrainedTokenizerFast`` (for TRL and
        ``save_pretrained``): ids, specials and decoding agree with this tokenizer."""
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        core = Tokenizer(models.WordLevel(vocab=dict(self.stoi), unk_token=self.UNK))
        # Every character is its own word ([\s\S]: any one character, newline included).
        core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        core.decoder = decoders.Fuse()
        # add_special_tokens=True prepends BOS, as encode_prompt does.
        core.post_processor = processors.TemplateProcessing(
            single=f"{self.BOS} $A", special_tokens=[(self.BOS, self.bos_id)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=core,
            pad_token=self.PAD,
            bos_token=self.BOS,
            eos_token=self.EOS,
            unk_token=self.UNK,
        )


class HFTokenizer:
    """Adapter from a ``transformers`` tokenizer to :class:`TokenizerLike`."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        if tok.eos_token_id is None:
            raise InputError("policy.name: the tokenizer has no EOS token")
        self.eos_id = int(tok.eos_token_id)
        # Many causal LMs ship without a pad token; EOS doubles as pad (always masked out).
        self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tok)

    def encode_prompt(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tok.decode(list(ids), skip_special_tokens=True))

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer carries a chat template."""
        return bool(getattr(self.tok, "chat_template", None))

    def encode_chat(self, text: str, system_prompt: str | None = None) -> list[int]:
        """Ids of ``text`` as one user turn (after an optional system turn), rendered by the
        tokenizer's chat template with the generation prompt (the assistant turn's opening)."""
        messages = [{"role": "user", "content": text}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        ids = self.tok.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return [int(i) for i in ids]


def prompt_encoder(tokenizer: TokenizerLike, policy: PolicyConfig) -> Callable[[str], list[int]]:
    """The job's prompt -> ids function: the tokenizer's chat template (with
    ``policy.system_prompt``) when ``policy.chat_template`` is true, or null and the tokenizer has
    one; else the raw text (:meth:`TokenizerLike.encode_prompt`).

    Raises:
        InputError: ``chat_template: true`` (or a ``system_prompt``) with a tokenizer that has no
            chat template.
    """
    has = bool(getattr(tokenizer, "has_chat_template", False))
    use = has if policy.chat_template is None else policy.chat_template
    if (use or policy.system_prompt is not None) and not has:
        what = "chat_template: true" if use else "system_prompt"
        raise InputError(f"policy.{what}: the tokenizer of {policy.name!r} has no chat template")
    if not use:
        return tokenizer.encode_prompt
    system = policy.system_prompt

    def encode(text: str) -> list[int]:
        return tokenizer.encode_chat(text, system)  # type: ignore[attr-defined, no-any-return]

    return encode


# --------------------------------------------------------------------------- base policy


@dataclass
class BasePolicy:
    """A base policy kept in host memory: weights, tokenizer and a model factory.

    Attributes:
        name: ``tiny`` or the HF name/path.
        tokenizer: the policy's tokenizer.
        state: base weights on CPU (never modified).
        make_module: builds an uninitialised module of the right architecture (on CPU).
        info: provenance (cache path, warm-start steps and accuracy, load time).
    """

    name: str
    tokenizer: TokenizerLike
    state: dict[str, torch.Tensor]
    make_module: Callable[[], torch.nn.Module]
    dtype: torch.dtype = torch.float32
    info: dict[str, Any] = field(default_factory=dict)

    def build_model(
        self, device: torch.device | str, dtype: torch.dtype | None = None
    ) -> torch.nn.Module:
        """A fresh module on ``device`` in ``dtype`` (default the policy dtype), holding the
        base weights."""
        model = self.make_module()
        model.load_state_dict(self.state)
        return model.to(device=device, dtype=self.dtype if dtype is None else dtype)

    def reset(self, model: torch.nn.Module) -> None:
        """Load the base weights into ``model`` in place (cheap per-job reset)."""
        model.load_state_dict(self.state)


class LivePolicy:
    """A worker's trained model: the base policy on ``device`` in ``dtype``, with every weight
    trainable, or (``lora``) frozen under a ``peft`` LoRA adapter that alone trains.

    The adapter is initialised under :data:`LORA_INIT_SEED` (on CPU, before the move to the
    device), so every job and worker starts from the same adapter; :meth:`reset` restores it (and
    nothing else: the frozen base never changes) or, without LoRA, the base weights.

    Attributes:
        base: the base policy.
        model: the ``transformers`` module to call (with LoRA, the base model with the adapter
            layers injected, so it is called exactly like the plain model).
    """

    def __init__(
        self,
        base: BasePolicy,
        device: torch.device | str,
        dtype: torch.dtype,
        lora: LoRAConfig | None = None,
    ) -> None:
        self.base = base
        self.lora = lora
        if lora is None:
            self.model = base.build_model(device, dtype)
        else:
            from peft import LoraConfig as PeftLoraConfig
            from peft import get_peft_model

            module = base.build_model("cpu", torch.float32)
            config = PeftLoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                bias="none",
                task_type="CAUSAL_LM",
            )
            with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
                torch.manual_seed(LORA_INIT_SEED)
                peft_model = get_peft_model(module, config, autocast_adapter_dtype=False)
            self.model = peft_model.get_base_model().to(device=device, dtype=dtype)
        # The adapter's starting point, on the device (small); full weights reset from the
        # host copy in ``base.state`` instead of holding a second copy on the device.
        self._initial_adapter = (
            {name: p.detach().clone() for name, p in self._trainable()} if lora else {}
        )

    def _trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        if self.lora is None:
            return list(self.model.named_parameters())
        return [(n, p) for n, p in self.model.named_parameters() if "lora_" in n]

    def reset(self) -> None:
        """Back to the job's starting point: the base weights (full) or the initial adapter
        (LoRA; the base stays frozen), eval mode (no dropout: the PPO ratio must compare one
        function), gradients off the frozen part and cleared."""
        if self.lora is None:
            self.base.reset(self.model)
        else:
            with torch.no_grad():
                for name, p in self._trainable():
                    p.copy_(self._initial_adapter[name])
        self.model.eval()
        self.model.requires_grad_(self.lora is None)
        for _, p in self._trainable():
            p.requires_grad_(True)
            p.grad = None

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates (all, or the adapter's)."""
        return [p for _, p in self._trainable()]

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute each decoder layer in backward (``transformers``' non-reentrant
        checkpointing). It acts only on modules in training mode, so the decoder layers alone
        are flagged as training: their children (attention, dropout) stay in eval mode."""
        from transformers.modeling_layers import GradientCheckpointingLayer

        model: Any = self.model
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x names
            if on:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.activation_checkpointing_disable()
        elif on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_disable()
        for module in self.model.modules():
            if isinstance(module, GradientCheckpointingLayer):
                module.training = on

    @torch.no_grad()
    def merged_weights(self) -> dict[str, torch.Tensor]:
        """The current policy as a plain model's ``state_dict`` (the base model's own parameter
        names): with LoRA each adapted weight is W + scale·B·A (nothing is merged in place);
        without, the live weights themselves. For an engine that keeps its own copy (vLLM)."""
        state = self.model.state_dict()
        if self.lora is None:
            return {k: v.detach() for k, v in state.items()}
        from peft.tuners.lora import LoraLayer

        merged = {
            k.replace(".base_layer.", "."): v.detach() for k, v in state.items() if "lora_" not in k
        }
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer):
                key = f"{name}.weight"
                merged[key] = merged[key] + module.get_delta_weight("default").to(merged[key].dtype)
        return merged


def default_cache_dir() -> Path:
    """``$SWEEPER_CACHE`` if set, else ``~/.cache/sweeper``."""
    env = os.environ.get("SWEEPER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sweeper"


def warm_start_identity(task_cfg: TaskConfig) -> dict[str, Any]:
    """The part of a task config the tiny warm start depends on. ``random`` warm-starts exactly
    like ``addition`` with the same digits (same prompts, same targets), so both share a base:
    the random-reward control starts from the same policy as the real task."""
    if isinstance(task_cfg, RandomRewardTask):
        return AdditionTask(digits=task_cfg.digits).model_dump(mode="json")
    return task_cfg.model_dump(mode="json")


def tiny_cache_key(tiny: TinyPolicyConfig, task_cfg: TaskConfig, alphabet: str) -> str:
    """Hash of everything the warm-started tiny policy depends on."""
    task_dump = warm_start_identity(task_cfg)
    if isinstance(task_cfg, FileTask):
        # A rewritten data file must not reuse a policy warm-started on the old one.
        stat = Path(task_cfg.path).expanduser().stat()
        task_dump["_file"] = [stat.st_size, stat.st_mtime_ns]
    blob = json.dumps(
        {
            "format": FORMAT_VERSION,
            "tiny": tiny.model_dump(mode="json"),
            "task": task_dump,
            "alphabet": alphabet,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def build_tiny_model(tiny: TinyPolicyConfig, vocab_size: int) -> torch.nn.Module:
    """An untrained tiny ``LlamaForCausalLM`` (ids: pad 0, bos 1, eos 2, as CharTokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=tiny.d_model,
        intermediate_size=4 * tiny.d_model,
        num_hidden_layers=tiny.n_layer,
        num_attention_heads=tiny.n_head,
        num_key_value_heads=tiny.n_head,
        # RoPE has no learned positions: a generous cap costs nothing and fits GSM8K prompts.
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config)


def _target_len(tokenizer: CharTokenizer, task: Task, problems: list[Problem]) -> int:
    return max(len(tokenizer.encode(task.supervised_target(p))) for p in problems) + 1


def greedy_accuracy(
    model: torch.nn.Module,
    tokenizer: TokenizerLike,
    task: Task,
    problems: list[Problem],
    max_new_tokens: int,
) -> float:
    """Share of ``problems`` whose greedy response ``task.correct`` accepts."""
    engine = HFEngine(model, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    batch = engine.generate(
        [tokenizer.encode_prompt(p.prompt) for p in problems],
        n=1,
        temperature=0.0,
        max_new_tokens=max_new_tokens,
    )
    hits = 0
    for i, problem in enumerate(problems):
        ids = batch.response_ids[i][batch.response_mask[i].bool()].tolist()
        hits += bool(task.correct(problem, tokenizer.decode(ids)))
    return hits / len(problems)


def warm_start(
    model: torch.nn.Module,
    tokenizer: CharTokenizer,
    task: Task,
    tiny: TinyPolicyConfig,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Supervised training on correct answers until greedy held-out accuracy reaches
    ``tiny.warm_start_target`` or ``tiny.warm_start_steps`` run out. Returns what happened
    (``steps``, ``accuracy``, ``history`` of (step, accuracy) checks, ``seconds``)."""
    start = time.perf_counter()
    rng = random.Random(WARM_START_SEED)
    held_out = task.eval_problems(WARM_START_EVAL_PROMPTS)
    max_new = _target_len(tokenizer, task, held_out) + 1
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tiny.warm_start_lr, weight_decay=0.0)
    history: list[tuple[int, float]] = []
    accuracy = float("nan")
    step = 0
    while step < tiny.warm_start_steps:
        # --- one supervised batch: BOS + prompt + target + EOS, loss on target + EOS only
        seqs, labels = [], []
        for problem in task.train_problems(rng, tiny.warm_start_batch):
            prompt = tokenizer.encode(problem.prompt, bos=True)
            answer = tokenizer.encode(task.supervised_target(problem), eos=True)
            seqs.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), tokenizer.pad_id, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        attn = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, lbl) in enumerate(zip(seqs, labels, strict=True)):
            ids[i, : len(s)] = torch.tensor(s)
            lab[i, : len(s)] = torch.tensor(lbl)
            attn[i, : len(s)] = 1
        out = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=lab.to(device))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        # --- periodic greedy check on held-out prompts
        if step % WARM_START_CHECK_EVERY == 0 or step == tiny.warm_start_steps:
            accuracy = greedy_accuracy(model, tokenizer, task, held_out, max_new)
            history.append((step, accuracy))
            if accuracy >= tiny.warm_start_target:
                break
    if not history:  # warm_start_steps == 0: still report where the base stands
        accuracy = greedy_accuracy(model, tokenizer, task, held_out, max_new)
        history.append((0, accuracy))
    return {
        "steps": step,
        "accuracy": accuracy,
        "history": history,
        "seconds": time.perf_counter() - start,
    }


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_tiny(
    policy: PolicyConfig,
    task: Task,
    task_cfg: TaskConfig,
    device: torch.device | str,
    cache_dir: Path,
) -> BasePolicy:
    tiny = policy.tiny
    tokenizer = CharTokenizer(tokenizer_alphabet(task))
    key = tiny_cache_key(tiny, task_cfg, tokenizer.alphabet)
    path = cache_dir / "tiny" / f"{key}.pt"

    def make_module() -> torch.nn.Module:
        return build_tiny_model(tiny, tokenizer.vocab_size)

    start = time.perf_counter()
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("format") == FORMAT_VERSION:
                info = {**blob["info"], "cache_path": str(path), "from_cache": True}
                info["load_seconds"] = time.perf_counter() - start
                return BasePolicy(
                    "tiny", tokenizer, blob["state"], make_module, _DTYPES[policy.dtype], info
                )
        except Exception as err:  # a corrupt or foreign file: rebuild and overwrite it
            log.warning("ignoring unreadable tiny-policy cache %s: %s", path, err)

    # Build: seeded init + warm start, then cache. Warm start runs in float32 on `device`.
    torch.manual_seed(WARM_START_SEED)
    model = make_module()
    result = warm_start(model, tokenizer, task, tiny, device)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    info = {
        "warm_start_steps": result["steps"],
        "warm_start_accuracy": result["accuracy"],
        "warm_start_history": [list(h) for h in result["history"]],
        "warm_start_seconds": result["seconds"],
        "key": key,
    }
    _atomic_torch_save({"format": FORMAT_VERSION, "state": state, "info": info}, path)
    info = {**info, "cache_path": str(path), "from_cache": False}
    return BasePolicy("tiny", tokenizer, state, make_module, _DTYPES[policy.dtype], info)


def _load_hf(policy: PolicyConfig) -> BasePolicy:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = policy.name
    is_path = Path(name).expanduser().exists()
    if is_path:
        name = str(Path(name).expanduser())
    elif name.startswith((".", "/", "~")):
        raise InputError(f"policy.name: path not found: {name}")
    kwargs = {"local_files_only": True} if is_path else {}
    start = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(name, **kwargs)
        config = AutoConfig.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"policy.name: cannot load {name!r}: {first}") from err
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    del model

    def make_module() -> torch.nn.Module:
        return AutoModelForCausalLM.from_config(config)

    info = {"load_seconds": time.perf_counter() - start, "source": name}
    return BasePolicy(name, HFTokenizer(tok), state, make_module, _DTYPES[policy.dtype], info)


def load_base_policy(
    policy: PolicyConfig,
    task: Task,
    task_cfg: TaskConfig,
    device: torch.device | str = "cpu",
    cache_dir: str | Path | None = None,
) -> BasePolicy:
    """The base policy of a job: ``tiny`` (warm-started for ``task``, cached) or an HF model.

    Args:
        policy: the job's ``policy`` block.
        task: the built task (the tiny policy's alphabet and warm-start data come from it).
        task_cfg: the job's ``task`` block (part of the tiny cache key).
        device: where the warm start runs (the returned weights are on CPU).
        cache_dir: cache root; default :func:`default_cache_dir`.

    Raises:
        InputError: an HF name/path that cannot be loaded.
    """
    if policy.name == "tiny":
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        return _load_tiny(policy, task, task_cfg, device, root)
    return _load_hf(policy)
