"""Decoder models built from size presets (the paper's 44M, 163M, 400M and small CPU ones)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import transformers.integrations.deepspeed as hf_deepspeed
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

PRESETS = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 2},
    "demo": {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4},
    "44M": {"num_hidden_layers": 8, "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8},
    "163M": {"num_hidden_layers": 12, "hidden_size": 896, "intermediate_size": 3584, "num_attention_heads": 16},
    "400M": {"num_hidden_layers": 12, "hidden_size": 1536, "intermediate_size": 6144, "num_attention_heads": 12},
}
MAX_POSITIONS = 512


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


def build_model(args, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised decoder (seed it before calling) sized by `args` (ModelArguments)."""
    sizes = dict(PRESETS[args.model_preset])
    sizes.update({k: getattr(args, k) for k in sizes if getattr(args, k) is not None})
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
    return AutoModelForCausalLM.from_config(config, attn_implementation=args.attn_implementation)


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Total parameters and those outside the input and output embeddings."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - embeddings}
