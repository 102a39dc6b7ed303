"""``engine: vllm``: vLLM's offline ``LLM``, colocated with the training model in the worker.

The engine runs in the worker's own process (vLLM's in-process mode,
``VLLM_ENABLE_V1_MULTIPROCESSING=0``): start-up takes seconds, weights move from the trainer's
tensors straight into the engine's with no file or socket in between, and no port is opened, so
any number of workers can share a GPU. It is built from the policy's ``config.json`` alone with
dummy weights, so it never downloads or reads a checkpoint, and it skips tokenizer set-up: it
takes and returns token ids (the job's tokenizer decodes).

Weights: :meth:`VLLMEngine.sync_weights` pushes ``(name, tensor)`` pairs in the HF model's own
naming (``model.state_dict().items()`` of a plain ``transformers`` causal LM) into the running
engine with vLLM's in-place layerwise reload (it renames, stacks q/k/v and gate/up and re-packs
for the backend), then resets the prefix cache: cached KV blocks of the old weights would
otherwise be reused for any prompt longer than one block. The job pushes the base weights at the
start of each job and the new weights after each step's updates.

Sampling matches :class:`sweeper.rl.engines.hf.HFEngine`: pure temperature sampling (no
top-p/top-k; the model's ``generation_config`` is not read), ``n`` samples per prompt, stop at
EOS (included) or after ``max_new_tokens``, one independent seed per prompt drawn from the job's
generator. Each sampled token's log-prob under the temperature-scaled distribution comes back in
``RolloutBatch.engine_logp``.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from sweeper.config.job import VLLM_INSTALL_HINT, VLLMConfig
from sweeper.errors import InputError
from sweeper.rl.engines.base import RolloutBatch, Weights, left_pad, register_engine

__all__ = ["CPU_KV_CACHE_BYTES", "GPU_SHARE_OF_JOB", "VLLMEngine"]

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 256 << 20
"""Default KV-cache size on CPU (vLLM's CPU backend wants an explicit size)."""

GPU_SHARE_OF_JOB = 0.5
"""Default share of the job's GPU slice that vLLM may take (weights + KV cache); the rest is
the trainer's (weights, gradients, optimizer state, activations). verl's default is 0.5 too."""

_EXTENSION = "sweeper.rl.engines._vllm_worker.WeightPushExtension"
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _import_vllm() -> Any:
    # In-process engine core: the weight push hands over live tensors (a separate engine process
    # would receive them serialised as lists). Set before vLLM reads its environment.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    # vLLM's start-up warnings (no tokenizer, no tcmalloc, ...) are expected here; its errors
    # still show. VLLM_LOGGING_LEVEL=INFO brings the rest back.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except ImportError as err:
        raise InputError(f"job.engine: vllm is not installed here ({VLLM_INSTALL_HINT})") from err
    except Exception as err:  # e.g. a CUDA torchvision beside the CPU torch
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"job.engine: vllm is installed but does not import ({first}); on CPU, uninstall the "
            "CUDA torchvision/torchaudio/torchcodec it pulled (`make setup` does)"
        ) from err
    _tolerate_odd_module_attributes()
    return vllm


def _tolerate_odd_module_attributes() -> None:
    # Without Triton (the CPU build), vLLM swaps in C++ kernels at start-up and rebinds every
    # reference to them by scanning all of sys.modules with `hasattr(value, "__dict__")`, which
    # raises instead of returning False on some objects (an unbound werkzeug LocalProxy such as
    # flask.request, present once anything in the process imported flask). Give that one module
    # a hasattr that treats such an object as having no __dict__.
    try:
        import vllm.triton_utils.dispatcher as dispatcher
    except ImportError:  # another vLLM layout: nothing to patch
        return

    def tolerant_hasattr(obj: object, name: str) -> bool:
        try:
            return hasattr(obj, name)
        except Exception:
            return False

    dispatcher.hasattr = tolerant_hasattr  # type: ignore[attr-defined]


@contextmanager
def _no_side_effects() -> Iterator[None]:
    """Undo what building an in-process engine does to the calling process: vLLM reseeds the
    global RNGs, sets torch to one thread and (CPU backend) replaces ``torch.set_num_threads``
    with a no-op, which would pin the trainer beside it to one thread for good."""
    import numpy as np

    set_threads, threads = torch.set_num_threads, torch.get_num_threads()
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


@register_engine("vllm")
class VLLMEngine:
    """Rollouts with vLLM's offline ``LLM`` in this process (see the module docstring).

    Args:
        model: the trainer's policy, a plain ``transformers`` causal LM (for LoRA: the base
            model; push merged weights). Its config shapes the engine; its current weights are
            pushed once at the end of construction.
        eos_id: the token that ends a response (kept in the output).
        pad_id: the id that pads prompts and responses.
        options: the job's ``vllm`` block (defaults when None).
        gpu_fraction: the job's share of its GPU (``run.resources.num_gpus``, e.g. 0.25), which
            sizes the default ``gpu_memory_utilization``; None means the whole GPU.
        weights: the weights to start from, as :meth:`sync_weights` takes them (with LoRA the
            merged ones); default ``model.state_dict()``.

    Raises:
        InputError: vLLM is not installed or does not import; vLLM's platform is not the
            trainer's device (a CUDA build with ``device: cpu``, or the CPU build on a GPU).
    """

    holds_weights = True  # the job pushes the trainer's weights after every step

    def __init__(
        self,
        model: torch.nn.Module,
        eos_id: int,
        pad_id: int,
        options: VLLMConfig | dict[str, Any] | None = None,
        gpu_fraction: float | None = None,
        weights: Weights | None = None,
    ) -> None:
        vllm = _import_vllm()
        from vllm.platforms import current_platform

        self.eos_id, self.pad_id = eos_id, pad_id
        self.options = VLLMConfig.model_validate(options or {})
        param = next(model.parameters())
        self.device = param.device
        if current_platform.device_type != self.device.type:
            raise InputError(
                f"job.engine: this vllm build runs on {current_platform.device_type!r} but the "
                f"policy is on {self.device.type!r} (set job.device to match, or install the "
                "matching vllm build)"
            )
        start = time.perf_counter()
        kwargs = self.engine_kwargs(param.dtype, gpu_fraction)
        # vLLM reads the model's config.json once, at start-up (weights come from the trainer),
        # so the directory goes away right after: nothing is left behind by a killed worker.
        with tempfile.TemporaryDirectory(prefix="sweeper-vllm-") as model_dir:
            config = model.config.__class__.from_dict(model.config.to_dict())
            config.architectures = [type(model).__name__]  # unset on a model built from a config
            config.save_pretrained(model_dir)
            with _no_side_effects():
                self.llm: Any = vllm.LLM(model=model_dir, **kwargs)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.sync_weights(model.state_dict().items() if weights is None else weights)
        self.start_seconds = time.perf_counter() - start
        log.info("vLLM engine ready in %.1f s (%s)", self.start_seconds, kwargs)

    def engine_kwargs(self, trainer_dtype: torch.dtype, gpu_fraction: float | None) -> dict:
        """The ``vllm.LLM`` keyword arguments for these options on this device."""
        opts, on_cpu = self.options, self.device.type == "cpu"
        kwargs: dict[str, Any] = {
            "skip_tokenizer_init": True,  # ids in, ids out
            "load_format": "dummy",  # weights come from the trainer (sync_weights)
            "generation_config": "vllm",  # no model defaults (top_p, penalties): parity with hf
            "logprobs_mode": "processed_logprobs",  # log-probs after temperature, as the trainer's
            "dtype": _DTYPE_NAMES[trainer_dtype] if opts.dtype == "auto" else opts.dtype,
            "enforce_eager": on_cpu if opts.enforce_eager is None else opts.enforce_eager,
            "worker_extension_cls": _EXTENSION,
            "seed": 0,  # sampling seeds are per request, from the job's generator
        }
        if opts.max_model_len is not None:
            kwargs["max_model_len"] = opts.max_model_len
        if opts.block_size is not None:
            kwargs["block_size"] = opts.block_size
        elif on_cpu:
            kwargs["block_size"] = 32  # the CPU attention backend wants a multiple of 32
        if opts.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = opts.kv_cache_memory_bytes
        elif on_cpu:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        else:
            kwargs["gpu_memory_utilization"] = (
                opts.gpu_memory_utilization
                if opts.gpu_memory_utilization is not None
                else GPU_SHARE_OF_JOB * (gpu_fraction if gpu_fraction else 1.0)
            )
        return kwargs

    # -- weights

    @torch.no_grad()
    def sync_weights(self, weights: Weights) -> None:
        """Push ``weights`` into the running engine (in place, no restart), then reset the prefix
        cache. ``weights``: (name, tensor) pairs in the HF model's own parameter naming, on any
        device and in any float dtype (converted on load); a tied ``lm_head.weight`` is skipped
        by vLLM."""
        tensors = ((name, tensor.detach()) for name, tensor in weights)
        self.llm.collective_rpc("sweeper_load_weights", kwargs={"weights": tensors})
        # Blocks cached under the old weights must not serve new requests.
        self.llm.reset_prefix_cache()

    # -- sampling

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        temperature: float,
        max_new_tokens: int,
        generator: torch.Generator | None = None,
    ) -> RolloutBatch:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            raise ValueError("generate() needs at least one prompt")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.max_model_len:
            raise InputError(
                f"job.vllm.max_model_len: a prompt of {longest} tokens + max_new_tokens "
                f"{max_new_tokens} exceeds the engine's {self.max_model_len}; raise it"
            )
        # One seed per prompt (vLLM gives sample j of a prompt seed + j), drawn from the job's
        # stream, so rows repeat with the job seed and groups are independent of each other.
        if generator is not None:
            seeds = torch.randint(
                0, 1 << 62, (len(prompts),), generator=generator, device=generator.device
            ).tolist()
        else:
            seeds = [None] * len(prompts)
        # Greedy decoding gives one answer per prompt (vLLM refuses n > 1 there): repeat it.
        draws, copies = (1, n) if temperature == 0.0 else (n, 1)
        params = [
            SamplingParams(
                n=draws,
                temperature=temperature,
                max_tokens=max_new_tokens,
                seed=seed,
                logprobs=0,  # the sampled token's own log-prob only
                stop_token_ids=[self.eos_id],
                detokenize=False,
            )
            for seed in seeds
        ]
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)

        rows: list[list[int]] = []
        logps: list[list[float]] = []
        for request in outputs:  # in prompt order
            for sample in sorted(request.outputs, key=lambda o: o.index):
                ids = list(sample.token_ids)
                lp = [float(sample.logprobs[t][i].logprob) for t, i in enumerate(ids)]
                rows.extend([ids] * copies)
                logps.extend([lp] * copies)
        width = max(1, max(len(r) for r in rows))
        response_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        response_mask = torch.zeros((len(rows), width), dtype=torch.long)
        engine_logp = torch.zeros((len(rows), width), dtype=torch.float32)
        for i, (ids, lp) in enumerate(zip(rows, logps, strict=True)):
            response_ids[i, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            response_mask[i, : len(ids)] = 1
            engine_logp[i, : len(ids)] = torch.as_tensor(lp, dtype=torch.float32)
        prompt_ids, prompt_mask = left_pad(prompts, self.pad_id, self.device)
        return RolloutBatch(
            prompt_ids=prompt_ids.repeat_interleave(n, dim=0),
            prompt_mask=prompt_mask.repeat_interleave(n, dim=0),
            response_ids=response_ids.to(self.device),
            response_mask=response_mask.to(self.device),
            engine_logp=engine_logp.to(self.device),
        )

    # -- shutdown

    def close(self) -> None:
        """Shut the engine down and free its memory (another engine may be built after)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            llm.llm_engine.engine_core.shutdown()
            del llm
            destroy_model_parallel()
            destroy_distributed_environment()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
