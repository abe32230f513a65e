"""Decoder models: built from size presets (the paper's 44M, 163M, 400M and small CPU ones), attention decoders
(Llama) or the recurrent Hawk, loaded from checkpoints, and their parameters named by block."""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers.integrations.deepspeed as hf_deepspeed
from safetensors import SafetensorError
from torch.nn import functional as F
from torch.nn.attention.flex_attention import BlockMask, create_mask, flex_attention
from transformers import (
    AttentionInterface,
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.recurrent_gemma import modeling_recurrent_gemma
from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaRglru

from common.errors import RecipeError, RunError

from .config import LORA_MODULES, ModelArguments

MAX_POSITIONS = 512
BLOCKS = {"attention": ".self_attn.", "mlp": ".mlp", "embeddings": "embed_tokens"}  # name parts (Hawk: .mlp_block.)
FUSED_ATTENTION = "fused_causal"  # what `sdpa` trains with (see fused_causal_attention)
FLEX_BLOCK = 128  # FlexAttention's default block size
HAWK = "hawk"  # De et al.'s (2024) Hawk: RecurrentGemma with RG-LRU blocks only, no attention
# Hawk's MLP is RecurrentGemma's, intermediate_size // 2 wide: twice the preset's gives the preset's width. No soft cap
# of the logits: the evaluator scores the head's output, and c tanh(x / c) is x exactly in float32 and bf16 for c = 2^20.
# No cache by default: transformers 5.24's cache of a model with recurrent blocks only fails in the forward. Untied
# embeddings, as the attention models': resume checkpoints hold both tables, which Accelerate refuses to load when tied.
HAWK_CONFIG = {"model_type": "recurrent_gemma", "block_types": ["recurrent"], "logits_soft_cap": 2.0 ** 20,
               "use_cache": False, "tie_word_embeddings": False}
HAWK_LORA_MODULES = ["linear_x", "linear_y", "linear_out", "gate_proj", "up_proj", "down_proj"]  # every projection


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


def model_config(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The config of a decoder sized by `args`: Llama-style (untied embeddings), or Hawk (HAWK_CONFIG; the preset's
    layers, width, MLP width and heads, which split the RG-LRU's gates into blocks; lru_width = hidden_size)."""
    sizes = args.sizes()
    tokens = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    if args.model_type == HAWK:
        hawk = {**HAWK_CONFIG, **sizes, "intermediate_size": 2 * sizes["intermediate_size"]}
        return AutoConfig.for_model(hawk.pop("model_type"), **hawk, **tokens)
    return AutoConfig.for_model(args.model_type, num_key_value_heads=sizes["num_attention_heads"],
                                max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=False, **tokens, **sizes)


def build_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase,
                attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A freshly initialised decoder (seed it before calling) sized by `args`; `sdpa` is
    fused_causal_attention."""
    config = model_config(args, tokenizer)
    implementation = FUSED_ATTENTION if attn_implementation == "sdpa" else attn_implementation
    return _prepared(AutoModelForCausalLM.from_config(config, attn_implementation=_kernel(config, implementation)))


def has_attention(model: PreTrainedModel | PretrainedConfig | Path) -> bool:
    """Whether a model (or its config, or a checkpoint folder's) has attention: every decoder but Hawk, whose
    blocks are all recurrent. The one question the analyses that need attention ask."""
    config = AutoConfig.from_pretrained(model) if isinstance(model, Path) else getattr(model, "config", model)
    return "attention" in getattr(config, "block_types", ["attention"])


def check_attention(model: PreTrainedModel | PretrainedConfig | Path, name: str, purpose: str) -> None:
    """Refuse in one line to `purpose` (e.g. "measure circuits on") a model without attention, called `name`."""
    if not has_attention(model):
        raise RecipeError(f"{name} is a Hawk model: it has no attention to {purpose}")


def lora_targets(model: PreTrainedModel, asked: list[str]) -> list[str]:
    """The modules given LoRA adapters: those `asked`, or for the default (every projection of a Llama-style
    decoder) on a Hawk model, every projection of its recurrent blocks and MLPs."""
    return HAWK_LORA_MODULES if asked == LORA_MODULES and not has_attention(model) else asked


def _kernel(config: PretrainedConfig, attn_implementation: str) -> str:
    """The attention implementation to build a model with: the one asked for, but for a model without attention
    the mask-free fused_causal one (transformers then builds no mask), and flash_attention_2 refused there."""
    if has_attention(config):
        return attn_implementation
    if attn_implementation == "flash_attention_2":
        raise RecipeError("attn_implementation flash_attention_2 has no meaning for a Hawk model, which has no "
                          "attention: leave attn_implementation at its default (sdpa)")
    return FUSED_ATTENTION


def _prepared(model: PreTrainedModel) -> PreTrainedModel:
    """A Hawk model made ready to train (attention models as they are): its RG-LRU scans stacked
    (`stacked_scan`), and packed rows refused (a recurrent state and its convolution would run across the
    biographies of a row)."""
    if has_attention(model):
        return model
    # The same bound as an int: the float one makes torch.compile with dynamic shapes fail in the backward of the
    # RG-LRU's SqrtBoundDerivative (a symbolic float lifted into its subgraph; pytorch/pytorch#111031's kind)
    modeling_recurrent_gemma._MAX_SQRT_GRADIENT = int(modeling_recurrent_gemma._MAX_SQRT_GRADIENT)
    for module in model.modules():
        if isinstance(module, RecurrentGemmaRglru):
            module._rnn_scan = types.MethodType(stacked_scan, module)
    model.get_decoder().register_forward_pre_hook(_refuse_packed_rows, with_kwargs=True)
    return model


def _refuse_packed_rows(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """A Hawk decoder's forward pre-hook: packed rows (which come with `document_ids`) are refused."""
    if "document_ids" in kwargs:
        raise RecipeError("packing lays several biographies in one row, and a Hawk model's recurrent state would run "
                          "across them: set --packing false")


def stacked_scan(self: RecurrentGemmaRglru, hidden_states: torch.Tensor, recurrent_gate: torch.Tensor,
                 reset: torch.Tensor, recurrent_states: torch.Tensor | None,
                 acc_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """RecurrentGemma's RG-LRU scan over a whole sequence from a zero state (training, evaluation), with the same
    arithmetic, each step's state stacked once at the end; the stock one writes each step into a [b, T, width]
    tensor, whose backward then copies a whole [b, T, width] gradient per step. Other calls (decoding with a
    cache) take the stock scan."""
    if hidden_states.shape[1] == 1 or recurrent_states is not None:
        return RecurrentGemmaRglru._rnn_scan(self, hidden_states, recurrent_gate, reset, recurrent_states, acc_dtype)
    gates = (recurrent_gate * ~reset).type(acc_dtype).unbind(1)
    state, states = torch.zeros(hidden_states[:, 0].shape, dtype=acc_dtype, device=hidden_states.device), []
    for gate, step in zip(gates, hidden_states.type(acc_dtype).unbind(1)):
        state = gate * state + step
        states.append(state)
    return torch.stack(states, 1).type(hidden_states.dtype), state


def load_checkpoint(checkpoint: Path, attn_implementation: str | None = None) -> PreTrainedModel:
    """A checkpoint's model, whole (see whole_model_init), with `attn_implementation` (None: transformers'
    default) where it has attention."""
    try:
        kernel = {} if attn_implementation is None else {
            "attn_implementation": _kernel(AutoConfig.from_pretrained(checkpoint), attn_implementation)}
        with whole_model_init():
            return _prepared(AutoModelForCausalLM.from_pretrained(checkpoint, **kernel))
    except RecipeError:
        raise
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
