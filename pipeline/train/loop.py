"""One Accelerate training loop over a biography stream, shared by every training stage."""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, TorchDynamoPlugin
from tqdm.auto import tqdm
from transformers import get_scheduler

from common.errors import RecipeError, RunError
from common.signals import StopSignals
from data_gen.stream import BiographyStream

from ..config import OptimizerArguments, PerformanceArguments, TrainArguments
from ..model import has_attention
from ..run_folder import read_state
from .callbacks import Callback
from .checkpoints import BackgroundWriter, ResumeCheckpointer
from .flops import peak_flops
from .loader import StreamLoader, row_length
from .speed import SpeedMeter


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


def single_device(accelerator: Accelerator) -> bool:
    """Whether the training loop drives the model itself: one process, no DeepSpeed, FSDP or fp16 loss scaling.
    Elsewhere every step goes through Accelerate's wrappers."""
    return accelerator.distributed_type == DistributedType.NO and accelerator.mixed_precision != "fp16"


def compile_options(args: PerformanceArguments) -> dict:
    """torch.compile's backend and, for inductor (the only backend that reads one), its mode."""
    mode = {"mode": args.torch_compile_mode} if args.torch_compile_backend == "inductor" else {}
    return {"backend": args.torch_compile_backend, **mode}


def make_accelerator(args: TrainArguments, project_dir: Path) -> Accelerator:
    """The run's Accelerator, with gradient accumulation (and DeepSpeed's batch sizes and clipping)
    set so that one optimizer step consumes exactly one global batch. `torch_compile` decides what is
    compiled, whatever an accelerate config says: Accelerate compiles the model for runs it drives (several
    processes, DeepSpeed, FSDP); on a single device the loop compiles its own step, once (see TrainingLoop)."""
    accelerator = Accelerator(mixed_precision=args.mixed_precision, project_dir=str(project_dir),
                              log_with=None if args.report_to == "none" else args.report_to)
    compiles = args.torch_compile and not single_device(accelerator)
    accelerator.state.dynamo_plugin = TorchDynamoPlugin(
        backend=args.torch_compile_backend if compiles else "no", mode=args.torch_compile_mode)
    n_micro = micro_batches(args, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = n_micro
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config.update({"train_batch_size": args.batch_size, "gradient_accumulation_steps": n_micro,
                       "train_micro_batch_size_per_gpu": args.batch_size // accelerator.num_processes // n_micro,
                       "gradient_clipping": args.max_grad_norm})
    return accelerator


def make_optimizer(model: torch.nn.Module, args: OptimizerArguments) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms and biases); fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, fused=fused or None)


class TrainingLoop:
    """Trains `model` on `stream` for args.max_steps optimizer steps, calling callbacks after each and
    writing resume checkpoints with `checkpointer` (none: an interrupted run starts over). Built here, run
    by `fit`."""

    def __init__(self, args: TrainArguments, model: torch.nn.Module, stream: BiographyStream,
                 accelerator: Accelerator, callbacks: list[Callback], checkpointer: ResumeCheckpointer | None = None):
        self.args, self.stream, self.accelerator, self.callbacks = args, stream, accelerator, callbacks
        self.checkpointer = checkpointer
        self.n_micro = accelerator.gradient_accumulation_steps
        self.single_device = single_device(accelerator)
        self.model, self.optimizer, self.scheduler = self._prepare(model)
        batching = args.batching(accelerator.device.type == "cuda", recurrent=not has_attention(model))
        rank, world = accelerator.process_index, accelerator.num_processes
        self.loader = StreamLoader(stream, rank, world, self.n_micro, accelerator.device, batching.prefetch_batches,
                                   batching.pad_to_multiple_of,
                                   row_length(stream, batching, args.max_steps, rank, world, self.n_micro),
                                   batching.packing)
        if self.single_device:  # the model's own forward under autocast: no fp32 copy of the logits, compiled here
            unwrapped = accelerator.unwrap_model(self.model, keep_fp32_wrapper=True)
            forward = getattr(unwrapped, "_original_forward", unwrapped.forward)
            self.forward = torch.compile(forward, dynamic=not batching.fixed_length, **compile_options(args)) \
                if args.torch_compile else forward
            self.autocast_dtype = torch.bfloat16 if args.mixed_precision == "bf16" else None
        self.tokens_seen = 0
        self.meter = SpeedMeter(accelerator.device, args.torch_compile,
                                accelerator.unwrap_model(self.model, keep_torch_compile=False).config, args.batch_size,
                                _run_peak_flops(accelerator, args.peak_tflops))
        self.writer, self.stop = BackgroundWriter(), StopSignal()

    def _prepare(self, model: torch.nn.Module) -> tuple:
        """The model and the optimizer prepared by the accelerator, and the learning-rate scheduler."""
        accelerator, args = self.accelerator, self.args
        if accelerator.distributed_type == DistributedType.DEEPSPEED:  # DeepSpeed wraps both at once
            model, optimizer = accelerator.prepare(model, make_optimizer(model, args))
        else:  # the model first, so that the optimizer sees parameters on the device (fused AdamW, FSDP)
            model = accelerator.prepare(model)
            optimizer = accelerator.prepare(make_optimizer(model, args))
        scheduler_kwargs = {"min_lr_rate": 0.1} if args.lr_scheduler_type == "cosine_with_min_lr" else {}
        # Stepped by hand once per optimizer step: a prepared scheduler would step once per process.
        stepped = optimizer.optimizer if self.single_device else optimizer  # the one whose step() is called
        scheduler = get_scheduler(args.lr_scheduler_type, stepped, num_warmup_steps=args.warmup_steps,
                                  num_training_steps=args.lr_schedule_steps or args.max_steps,
                                  scheduler_specific_kwargs=scheduler_kwargs)
        accelerator.register_for_checkpointing(scheduler)
        return model, optimizer, scheduler

    def load(self, checkpoint: Path) -> int:
        """Restore a resume checkpoint; returns the step it was taken after."""
        try:
            self.accelerator.load_state(str(checkpoint))
        except Exception as err:
            raise RunError(f"resume checkpoint '{checkpoint}' is damaged ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:160] if str(err) else ''}): delete that folder and rerun the "
                           f"command; the run then restarts from step 0") from err
        state = read_state(checkpoint)
        self.tokens_seen = state["tokens_seen"]
        self.loader.start_at(state["step"])
        return state["step"]

    def exposures(self, step: int) -> np.ndarray:
        """How many times each individual has been drawn in the first `step` steps."""
        return self.loader.exposures(step)

    def last_drawn(self, step: int) -> np.ndarray:
        """The step after which each individual was last drawn in the first `step` steps (0: never)."""
        return self.loader.last_drawn(step)

    def reset_optimizer_state(self) -> None:
        """Forget the optimizer's moments (the learning-rate schedule goes on)."""
        self.optimizer.optimizer.state.clear()

    def _tracker_run_ids(self) -> dict[str, str]:
        """Run ids of trackers that have one (wandb, ...), so a resumed run logs to the same run."""
        ids = {t.name: getattr(getattr(t, "run", None), "id", None) for t in self.accelerator.trackers}
        return {name: run_id for name, run_id in ids.items() if isinstance(run_id, str)}

    def write_in_background(self, write) -> None:
        """Run `write` in the checkpoint writer's thread, after the writes queued before it."""
        self.writer.submit(write)

    def _save_resume(self, step: int) -> None:
        self.checkpointer.save(self.accelerator, step, {"tokens_seen": self.tokens_seen,
                                                        "tracker_run_ids": self._tracker_run_ids()}, self.writer)

    def _writes_at(self, step: int) -> bool:
        """Whether weights or evaluations are written after `step`."""
        return (self.checkpointer is not None and self.checkpointer.due(step)) or any(
            c.writes_at(step) for c in self.callbacks)

    @torch.no_grad()
    def _check_weights(self, step: int) -> None:
        """Stop before anything is written if a weight is not finite (on any process's shard)."""
        finite = [torch.isfinite(_local(p)).all() for p in self.model.parameters() if _local(p).numel()]
        bad = (~torch.stack(finite).all()).float() if finite else torch.zeros((), device=self.accelerator.device)
        if self.accelerator.reduce(bad.to(self.accelerator.device), reduction="sum").item() > 0:
            raise RunError(f"the weights are not finite after step {step} (an update blew up): lower learning_rate (or "
                           f"add warmup_steps, or clip with max_grad_norm); nothing was written after the previous "
                           f"checkpoint, so rerunning resumes from the last good one")

    def _call(self, step: int) -> None:
        """The callbacks and the resume checkpoint of `step`, timed apart from training."""
        with self.meter.callbacks():
            for callback in self.callbacks:
                callback.on_step(self, step)
            if self.checkpointer is not None and self.checkpointer.due(step):
                self._save_resume(step)

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step on the global batch drawn at `step`; returns this process's share of its
        mean token loss (summed over processes, it is the global batch's mean)."""
        batch = self.loader.get(step)
        total = self._single_device_step(batch) if self.single_device else self._accelerate_step(batch)
        self.scheduler.step()
        self.tokens_seen += batch.n_tokens
        return total

    def _single_device_step(self, batch) -> torch.Tensor:
        """A step on a single device without Accelerate's per-step wrappers (which only manage processes,
        accumulation bookkeeping and fp16 scaling there); the same arithmetic."""
        total = torch.zeros((), device=self.accelerator.device)
        for inputs in batch.micro:
            with torch.autocast(self.accelerator.device.type, dtype=self.autocast_dtype,
                                enabled=self.autocast_dtype is not None):
                loss = self.forward(**inputs, num_items_in_batch=batch.count, use_cache=False).loss
            loss.backward()  # sum over tokens / global token count: micro-batches add up to the batch's mean
            total += loss.detach()
        optimizer = self.optimizer.optimizer
        if self.args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    def _accelerate_step(self, batch) -> torch.Tensor:
        accelerator, model = self.accelerator, self.model
        scale = accelerator.num_processes * self.n_micro  # undo DDP's and accumulation's averaging
        total = torch.zeros((), device=accelerator.device)
        for inputs in batch.micro:
            with accelerator.accumulate(model):
                loss = model(**inputs, num_items_in_batch=batch.count, use_cache=False).loss
                accelerator.backward(loss * scale)  # sum over tokens / global token count, times the averaging
            total += loss.detach()
        if self.args.max_grad_norm and accelerator.distributed_type != DistributedType.DEEPSPEED:
            accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def fit(self, start_step: int = 0) -> None:
        """Train from `start_step` (0, or the step of a loaded resume checkpoint) to args.max_steps; on
        SIGTERM or a first Ctrl-C, save a resume checkpoint after the current step and stop."""
        # On a CPU, denormal floats (tiny second moments and probabilities) take a slow path: flushing them to 0
        # makes the demo's step 9% faster and left its trajectory bit-identical.
        flushes = self.accelerator.device.type == "cpu" and torch.set_flush_denormal(True)  # False: unsupported
        with self.stop:
            try:
                self._fit(start_step)
            finally:
                if flushes:
                    torch.set_flush_denormal(False)
                self.loader.close()
                self.writer.close()  # checkpoints already snapshotted are written, whatever stopped training

    @property
    def summary(self) -> str:
        """The run's speed in one line: steps, ms per step, compile time and time in callbacks."""
        return self.meter.summary

    def _fit(self, start_step: int) -> None:
        self.model.train()
        for callback in self.callbacks:
            callback.on_train_begin(self, start_step)
        self.meter.begin(self.tokens_seen)
        if start_step == 0:
            self._after_step(0, checked=False)
        bar = tqdm(initial=start_step, total=self.args.max_steps, disable=not self.accelerator.is_main_process,
                   desc="training")
        self.meter.new_window(self.tokens_seen)
        window = _LossWindow(self.accelerator.device)
        try:  # the bar is closed before any error is printed
            for step in range(start_step + 1, self.args.max_steps + 1):
                window.add(self.train_step(step - 1))
                self.meter.stepped(self.tokens_seen)
                logged = step % self.args.logging_steps == 0 or step == self.args.max_steps
                if logged:
                    self._log(step, window, bar)
                bar.update()
                self._after_step(step, checked=logged, window=window)
        finally:
            bar.close()

    def _log(self, step: int, window: _LossWindow, bar: tqdm) -> None:
        """Log the window's mean loss (after checking it is finite), the learning rate and the speed."""
        loss = window.mean(self.accelerator, step)
        speed = self.meter.window(self.tokens_seen)
        lr = self.scheduler.get_last_lr()[0]
        self.accelerator.log({"train/loss": loss, "train/lr": lr, **speed}, step=step)
        bar.set_postfix(loss=f"{loss:.3f}", **({"tok_s": f"{speed['perf/tokens_per_s']:,.0f}"} if speed else {}))
        window.reset()

    def _after_step(self, step: int, checked: bool, window: _LossWindow | None = None) -> None:
        """Check that what is about to be written is finite (never write weights or evaluations of a blown-up
        model), call the callbacks, then stop if a signal asked to."""
        if self._writes_at(step):
            if window is not None and not checked:
                window.check(self.accelerator, step)
            self._check_weights(step)
        self._call(step)
        if step and self.stop.requested(self.accelerator, step, self.args.logging_steps):
            self._stop_after(step)

    def _stop_after(self, step: int) -> None:
        """Save a resume checkpoint after `step` (unless one was just saved) and stop with exit status 128 + the
        signal's number (143 for SIGTERM, 130 for SIGINT)."""
        name, code = self.stop.name, 128 + self.stop.signum
        if self.checkpointer is None:
            raise RunError(f"stopped by {name} after step {step}; save_steps is 0, so no resume checkpoint was "
                           f"saved and a rerun starts over", exit_code=code)
        if not self.checkpointer.due(step):
            self._check_weights(step)
            self._save_resume(step)
        saved = self.checkpointer.path(step)
        raise RunError(f"stopped by {name} after step {step}; resume checkpoint {saved} saved: rerun the same "
                       f"command to continue", exit_code=code)


class _LossWindow:
    """The training loss summed on the device over a logging window's steps (no host sync until read)."""

    def __init__(self, device: torch.device):
        self.total, self.steps = torch.zeros((), device=device), 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss
        self.steps += 1

    def mean(self, accelerator: Accelerator, step: int) -> float:
        """The mean over the window and the processes, checked finite (this waits for the device)."""
        loss = accelerator.reduce(self.total, reduction="sum").item() / self.steps
        _check_finite(loss, step)
        return loss

    def check(self, accelerator: Accelerator, step: int) -> None:
        _check_finite(accelerator.reduce(self.total.clone(), reduction="sum").item(), step)

    def reset(self) -> None:
        self.total.zero_()
        self.steps = 0


def _run_peak_flops(accelerator: Accelerator, override_tflops: float | None) -> float | None:
    """The peak 16-bit FLOP/s of all the run's devices, for MFU (None where unknown)."""
    peak = peak_flops(accelerator.device, override_tflops)
    return peak * accelerator.num_processes if peak else None


def _local(parameter: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter: its DeepSpeed ZeRO-3 partition or DTensor shard, else itself."""
    if hasattr(parameter, "ds_tensor"):
        return parameter.ds_tensor
    return parameter.to_local() if hasattr(parameter, "to_local") else parameter


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise RunError(f"training loss is {loss} at step {step}: lower learning_rate (or add warmup_steps); no "
                       f"checkpoint was written after it, so rerunning resumes from the last good one")


class StopSignal(StopSignals):
    """SIGTERM (a cluster's pre-emption, `kill`) and a first Ctrl-C ask the run to stop after the current step,
    with a resume checkpoint; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self):
        super().__init__(on_request=_announce)

    @property
    def flag(self) -> bool:
        return self.signum is not None

    def requested(self, accelerator: Accelerator, step: int, every: int) -> bool:
        """Whether any process got a signal, so that all of them stop after the same step. With several
        processes that takes a collective, so they agree only every `every` steps (on the highest signal)."""
        if accelerator.num_processes == 1:
            return self.flag
        if step % every:
            return False
        signum = torch.tensor(float(self.signum or 0), device=accelerator.device)
        agreed = int(accelerator.reduce(signum, reduction="max").item())
        if agreed:
            self.signum = self.signum or agreed
        return agreed > 0


def _announce(signum: int) -> None:
    if signum == signal.SIGINT:
        print("\nCtrl-C: stopping after this step with a resume checkpoint (press it again to stop at once)",
              file=sys.stderr)
