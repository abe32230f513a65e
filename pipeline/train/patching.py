"""Attention patching: train while every layer's post-softmax attention pattern is replaced by that
of a reference model on the same inputs, with gradients stopped through the patterns.

The patched model's own queries and keys are then unused; its values, output projections and MLPs
train on the reference's patterns. Works for Llama-style decoders (`model.layers[i].self_attn`)
whatever attention implementation they were built with; a reference without attention (Hawk) is refused.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.models.llama.modeling_llama import repeat_kv

from common.errors import RecipeError

from ..config import PatchingArguments, PerformanceArguments
from ..model import check_attention, load_checkpoint
from ..run_folder import RunFolder, step_of
from .callbacks import Callback, TrainingState

PATCHED_ATTENTION = "patched_attention"


def patched_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Attention with the pattern stored on the module by AttentionPatcher instead of softmax(QK^T)."""
    pattern = module.patched_pattern
    value = repeat_kv(value, module.num_key_value_groups)
    output = torch.matmul(pattern.to(value.dtype), value).transpose(1, 2).contiguous()
    return output, pattern


AttentionInterface.register(PATCHED_ATTENTION, patched_attention_forward)


class AttentionPatcher:
    """Feeds a model the attention patterns of `reference` (eager attention, frozen) for its inputs."""

    def __init__(self, reference: PreTrainedModel):
        self.reference = reference.eval().requires_grad_(False)
        self.model: PreTrainedModel | None = None
        self.handle = None

    def attach(self, model: PreTrainedModel) -> None:
        """From now on, every forward of `model` (training or evaluation) uses the reference's patterns."""
        if self.model is not None:
            return
        self.model = model
        self.handle = model.get_decoder().register_forward_pre_hook(self._capture, with_kwargs=True)
        model.set_attn_implementation(PATCHED_ATTENTION)

    @torch.no_grad()
    def _capture(self, decoder: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        out = self.reference.get_decoder()(input_ids=input_ids, attention_mask=kwargs.get("attention_mask"),
                                           output_attentions=True)
        for layer, pattern in zip(decoder.layers, out.attentions):
            layer.self_attn.patched_pattern = pattern.detach()


class PatchingCallback(Callback):
    """Starts patching after `start` optimizer steps, resetting the optimizer's state then (as the
    paper does); a run resumed past `start` patches from its first step."""

    def __init__(self, patcher: AttentionPatcher, start: int):
        self.patcher, self.start = patcher, start

    def on_train_begin(self, state: TrainingState, step: int) -> None:
        if step >= self.start:
            self.patcher.attach(state.accelerator.unwrap_model(state.model))

    def on_step(self, state: TrainingState, step: int) -> None:
        if step == self.start and self.patcher.model is None:
            self.patcher.attach(state.accelerator.unwrap_model(state.model))
            state.reset_optimizer_state()


def check_reference(patching: PatchingArguments, args: PerformanceArguments) -> None:
    """Stop with a clear error, before anything is written, if patching cannot run."""
    reference = RunFolder(patching.reference_run)
    steps = [step_of(c) for c in reference.complete_checkpoints()]
    for step in (0, patching.reference_checkpoint):
        if step not in steps:
            raise RecipeError(f"reference run '{patching.reference_run}' has no checkpoint at step {step} (it has "
                              f"{steps or 'none'}): add it to the reference's checkpoint_at (formerly "
                              f"checkpoint_steps) and rerun it")
    check_attention(reference.checkpoint(0), f"reference run '{patching.reference_run}'", "patch")
    if args.torch_compile:
        raise RecipeError("attention patching does not work with torch_compile: set --torch_compile false")
    if args.packing:
        raise RecipeError("attention patching feeds whole rows to the reference model, not packed biographies: set "
                          "--packing false")


def patching_callback(patching: PatchingArguments, model: PreTrainedModel, device: torch.device) -> PatchingCallback:
    """Set `model` to the reference run's initial weights and return the callback that patches it with
    the reference checkpoint's attention (checked by check_reference)."""
    reference_run = RunFolder(patching.reference_run)
    initial = load_checkpoint(reference_run.checkpoint(0))
    reference = load_checkpoint(reference_run.checkpoint(patching.reference_checkpoint),
                                attn_implementation="eager").to(device)
    try:
        model.load_state_dict(initial.state_dict())
    except RuntimeError as err:
        raise RecipeError(f"the model arguments differ from the reference run's ({str(err).splitlines()[0][:120]}): "
                          f"use the reference's model recipe") from err
    return PatchingCallback(AttentionPatcher(reference), patching.start_patching)
