"""Decoder models: built from size presets (the paper's 44M, 163M, 400M and small CPU ones), loaded
from checkpoints, and their parameters named by block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import transformers.integrations.deepspeed as hf_deepspeed
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from data_gen.recipe import RunError

from .config import ModelArguments

MAX_POSITIONS = 512
BLOCKS = {"attention": ".self_attn.", "mlp": ".mlp.", "embeddings": "embed_tokens"}  # name parts of Llama-style blocks


@contextmanager
def whole_model_init() -> Iterator[None]:
    """Build or load models whole, even inside a DeepSpeed ZeRO-3 launch: transformers would otherwise
    build them partitioned (unusable outside the engine, and initialised with other random numbers)."""
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def build_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase,
                attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A freshly initialised decoder (seed it before calling) sized by `args`."""
    sizes = args.sizes()
    config = AutoConfig.for_model(
        args.model_type,
        vocab_size=len(tokenizer),
        num_key_value_heads=sizes["num_attention_heads"],
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)


def load_checkpoint(checkpoint: Path, **kwargs) -> PreTrainedModel:
    """A checkpoint's model, whole (see whole_model_init)."""
    try:
        with whole_model_init():
            return AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise RunError(f"checkpoint '{checkpoint}' cannot be loaded ({type(err).__name__}: "
                       f"{str(err).splitlines()[0][:160] if str(err) else ''}): it is damaged or incomplete; point at "
                       f"another checkpoint, or delete it and rerun the run that wrote it") from err


def load_eager(checkpoint: Path) -> PreTrainedModel:
    """A checkpoint's model in eval mode, with eager attention so that patterns can be returned."""
    return load_checkpoint(checkpoint, attn_implementation="eager").eval()


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Total parameters and those outside the input and output embeddings (whole, even when DeepSpeed
    ZeRO-3 partitions them)."""
    def size(p):
        return getattr(p, "ds_numel", p.numel())

    total = sum(size(p) for p in model.parameters())
    embeddings = size(model.get_input_embeddings().weight) + size(model.get_output_embeddings().weight)
    return {"total": total, "non_embedding": total - embeddings}
