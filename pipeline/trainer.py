"""One Accelerate training loop over a biography stream, shared by every training stage."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from data_gen.recipe import RecipeError
from data_gen.stream import BiographyStream, shard_rows

from .callbacks import Callback
from .config import TrainArguments


def micro_batches(args: TrainArguments, num_processes: int) -> int:
    """Forward passes per process per step, so that the global batch is independent of the process count."""
    if args.batch_size % num_processes:
        raise RecipeError(f"batch_size {args.batch_size} is not divisible by the {num_processes} processes: "
                          f"pick a multiple of {num_processes}")
    per_process = args.batch_size // num_processes
    micro = args.micro_batch_size or per_process
    if per_process % micro:
        raise RecipeError(f"micro_batch_size {micro} does not divide the {per_process} biographies per process: "
                          f"pick a divisor of {per_process}")
    return per_process // micro


def make_optimizer(model: torch.nn.Module, args: TrainArguments) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms and biases)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon)


class Trainer:
    """Trains `model` on `stream` for args.max_steps optimizer steps, calling callbacks after each."""

    def __init__(self, args: TrainArguments, model: torch.nn.Module, stream: BiographyStream,
                 accelerator: Accelerator, callbacks: list[Callback]):
        self.args, self.stream, self.accelerator, self.callbacks = args, stream, accelerator, callbacks
        self.n_micro = micro_batches(args, accelerator.num_processes)
        optimizer = make_optimizer(model, args)
        scheduler_kwargs = {"min_lr_rate": 0.1} if args.lr_scheduler_type == "cosine_with_min_lr" else {}
        # Stepped by hand once per optimizer step: a prepared scheduler would step once per process.
        self.scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.warmup_steps,
                                       num_training_steps=args.max_steps, scheduler_specific_kwargs=scheduler_kwargs)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.tokens_seen = 0

    def _call(self, step: int) -> None:
        for callback in self.callbacks:
            callback.on_step(self, step)

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step on the global batch drawn at `step`; returns this process's share of its
        mean token loss (summed over processes, it is the global batch's mean)."""
        accelerator, model = self.accelerator, self.model
        n_tokens = self.stream.num_label_tokens(step)
        scale = accelerator.num_processes * self.n_micro  # undo DDP's and accumulation's averaging
        total = torch.zeros((), device=accelerator.device)
        for micro in range(self.n_micro):
            rows = shard_rows(self.args.batch_size, accelerator.process_index, accelerator.num_processes, micro,
                              self.n_micro)
            batch = self.stream.batch(step, rows)
            inputs = {k: torch.from_numpy(batch[k]).to(accelerator.device)
                      for k in ("input_ids", "attention_mask", "labels")}
            with accelerator.accumulate(model):
                loss = model(**inputs, num_items_in_batch=n_tokens).loss  # sum over tokens / global token count
                accelerator.backward(loss * scale)
            total += loss.detach()
        if self.args.max_grad_norm:
            accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_seen += n_tokens
        return total

    def fit(self) -> None:
        accelerator, args = self.accelerator, self.args
        self.model.train()
        self._call(0)
        bar = tqdm(total=args.max_steps, disable=not accelerator.is_main_process, desc="pretraining")
        running = torch.zeros((), device=accelerator.device)
        for step in range(1, args.max_steps + 1):
            running += self.train_step(step - 1)
            if step % args.logging_steps == 0 or step == args.max_steps:
                loss = accelerator.reduce(running, reduction="sum").item() / ((step - 1) % args.logging_steps + 1)
                if not math.isfinite(loss):
                    raise RuntimeError(f"training loss is {loss} at step {step}: lower learning_rate")
                accelerator.log({"train/loss": loss, "train/lr": self.scheduler.get_last_lr()[0]}, step=step)
                bar.set_postfix(loss=f"{loss:.3f}")
                running.zero_()
            bar.update()
            self._call(step)
        bar.close()
