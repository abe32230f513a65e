"""Decoder models: built from size presets (the paper's 44M, 163M, 400M and small CPU ones), loaded
from checkpoints, and their parameters named by block."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers.integrations.deepspeed as hf_deepspeed
from safetensors import SafetensorError
from torch.nn import functional as F
from torch.nn.attention.flex_attention import BlockMask, create_mask, flex_attention
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from common.errors import RunError

from .config import ModelArguments

MAX_POSITIONS = 512
BLOCKS = {"attention": ".self_attn.", "mlp": ".mlp.", "embeddings": "embed_tokens"}  # name parts of Llama-style blocks
FUSED_ATTENTION = "fused_causal"  # what `sdpa` trains with (see fused_causal_attention)
FLEX_BLOCK = 128  # FlexAttention's default block size


def same_biography_causal(document_ids: torch.Tensor):
    """The mask function of packed rows ([b, T] document ids): a position attends to its own biography's
    positions up to itself."""
    def mask(batch, head, q, kv):
        return (document_ids[batch, q] == document_ids[batch, kv]) & (q >= kv)

    return mask


def document_block_mask(document_ids: torch.Tensor) -> BlockMask:
    """FlexAttention's block mask of packed rows ([b, T] document ids, -1 on the padding at the end), built at
    the block level from where each block's first biography starts (a biography is shorter than a block or
    spans a few), never as a [T, T] mask."""
    length = document_ids.shape[1]
    n_blocks = -(-length // FLEX_BLOCK)
    position = torch.arange(length, device=document_ids.device)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.cummax(torch.where(starts, position, 0), dim=1).values  # where each position's biography starts
    first_block = first[:, ::FLEX_BLOCK] // FLEX_BLOCK  # [b, blocks]: the earliest key block of each query block
    block = torch.arange(n_blocks, device=document_ids.device)
    kv_num_blocks = (block - first_block + 1).to(torch.int32)
    kv_indices = (first_block[..., None] + block).clamp(max=n_blocks - 1).to(torch.int32)
    return BlockMask.from_kv_blocks(kv_num_blocks[:, None], kv_indices[:, None], BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=same_biography_causal(document_ids), seq_lengths=(length, length))


def fused_causal_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                           document_ids: torch.Tensor | None = None, **kwargs):
    """Attention with no mask materialised. Rows of one right-padded biography each (training and evaluation
    rows: padding is never attended to by a real position, nor scored) take SDPA's fused causal kernel; packed
    rows (`document_ids` given) take FlexAttention over `document_block_mask` on a GPU. Registered without a
    mask function, transformers builds no [B, 1, T, T] mask for it (it would under torch.compile, which cannot
    tell default positions from packed ones) and makes no host sync to check for one.

    On a CPU, FlexAttention has no backward: packed rows there (tests; packing is off by default) take SDPA
    with the same mask, materialised."""
    if query.shape[2] != key.shape[2]:  # decoding with a cache: the new positions see every cached one
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    enable_gqa = module.num_key_value_groups > 1  # from the config: compiled, a comparison of shapes is symbolic
    if document_ids is not None and query.device.type != "cpu":
        output = flex_attention(query, key, value, block_mask=document_block_mask(document_ids), scale=scaling,
                                enable_gqa=enable_gqa)
    else:
        mask = None if document_ids is None else create_mask(same_biography_causal(document_ids), len(query), 1,
                                                             query.shape[2], key.shape[2], query.device)
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=mask is None,
                                                scale=scaling, dropout_p=dropout if module.training else 0.0,
                                                enable_gqa=enable_gqa)
    return output.transpose(1, 2).contiguous(), None


AttentionInterface.register(FUSED_ATTENTION, fused_causal_attention)


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
    """A freshly initialised decoder (seed it before calling) sized by `args`; `sdpa` is
    fused_causal_attention."""
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
    implementation = FUSED_ATTENTION if attn_implementation == "sdpa" else attn_implementation
    return AutoModelForCausalLM.from_config(config, attn_implementation=implementation)


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


def model_keys(model: PreTrainedModel) -> set[str]:
    """The state-dict keys of `model`'s class (built on the meta device from a copy of its config: building a
    model writes its attention implementation there)."""
    with torch.device("meta"):
        return set(type(model)(copy.deepcopy(model.config)).state_dict())


def check_model_keys(expected: set[str], weights: dict, checkpoint: Path, model_name: str) -> None:
    """Refuse to write `weights` as `checkpoint` unless they hold exactly the `expected` keys (model_keys), so
    that `from_pretrained` loads them all (a wrapper's prefix would leave it a randomly initialised model)."""
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise RunError(f"checkpoint {checkpoint} was not written: its weights lack {len(missing)} keys of "
                       f"{model_name} ({', '.join(missing[:2]) or 'none'}) and hold {len(unexpected)} "
                       f"others ({', '.join(unexpected[:2]) or 'none'}), so it would not load as the model; a bug: "
                       f"report it with the recipe (the run's earlier checkpoints are intact)")


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Total parameters and those outside the input and output embeddings (whole, even when DeepSpeed
    ZeRO-3 partitions them)."""
    def size(p):
        return getattr(p, "ds_numel", p.numel())

    total = sum(size(p) for p in model.parameters())
    embeddings = size(model.get_input_embeddings().weight) + size(model.get_output_embeddings().weight)
    return {"total": total, "non_embedding": total - embeddings}
