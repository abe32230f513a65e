"""One Accelerate training loop over a biography stream, shared by every training stage."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, TorchDynamoPlugin
from tqdm.auto import tqdm
from transformers import get_scheduler

from common.errors import RecipeError, RunError
from data_gen.stream import BiographyStream

from ..config import OptimizerArguments, PerformanceArguments, TrainArguments
from ..run_folder import read_state
from .callbacks import Callback
from .checkpoints import BackgroundWriter, ResumeCheckpointer
from .flops import flops_per_token, peak_flops
from .loader import StreamLoader, packed_length


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
    """Whether the trainer drives the model itself: one process, no DeepSpeed, FSDP or fp16 loss scaling.
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
    processes, DeepSpeed, FSDP); on a single device the trainer compiles its own step, once (see Trainer)."""
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


class Trainer:
    """Trains `model` on `stream` for args.max_steps optimizer steps, calling callbacks after each and
    writing resume checkpoints with `checkpointer` (none: an interrupted run starts over)."""

    def __init__(self, args: TrainArguments, model: torch.nn.Module, stream: BiographyStream,
                 accelerator: Accelerator, callbacks: list[Callback], checkpointer: ResumeCheckpointer | None = None):
        self.args, self.stream, self.accelerator, self.callbacks = args, stream, accelerator, callbacks
        self.checkpointer = checkpointer
        self.n_micro = accelerator.gradient_accumulation_steps
        if accelerator.distributed_type == DistributedType.DEEPSPEED:  # DeepSpeed wraps both at once
            self.model, self.optimizer = accelerator.prepare(model, make_optimizer(model, args))
        else:  # the model first, so that the optimizer sees parameters on the device (fused AdamW, FSDP)
            self.model = accelerator.prepare(model)
            self.optimizer = accelerator.prepare(make_optimizer(self.model, args))
        scheduler_kwargs = {"min_lr_rate": 0.1} if args.lr_scheduler_type == "cosine_with_min_lr" else {}
        # Stepped by hand once per optimizer step: a prepared scheduler would step once per process.
        self.direct = single_device(accelerator)
        stepped = self.optimizer.optimizer if self.direct else self.optimizer  # the one whose step() is called
        self.scheduler = get_scheduler(args.lr_scheduler_type, stepped, num_warmup_steps=args.warmup_steps,
                                       num_training_steps=args.lr_schedule_steps or args.max_steps,
                                       scheduler_specific_kwargs=scheduler_kwargs)
        accelerator.register_for_checkpointing(self.scheduler)
        on_gpu = accelerator.device.type == "cuda"
        prefetch = args.prefetch_batches if args.prefetch_batches is not None else (2 if on_gpu else 0)
        multiple = args.pad_to_multiple_of or (8 if on_gpu else 1)
        fixed = args.fixed_length if args.fixed_length is not None else on_gpu
        self.pack = args.packs(on_gpu)
        rank, world = accelerator.process_index, accelerator.num_processes
        if not fixed:
            length = None
        elif self.pack:
            length = packed_length(stream, args.max_steps, rank, world, self.n_micro, multiple)
        else:
            length = -(-stream.max_length // multiple) * multiple
        self.loader = StreamLoader(stream, rank, world, self.n_micro, accelerator.device, prefetch, multiple, length,
                                   self.pack)
        if self.direct:  # the model's own forward under autocast: no fp32 copy of the logits, compiled here
            unwrapped = accelerator.unwrap_model(self.model, keep_fp32_wrapper=True)
            forward = getattr(unwrapped, "_original_forward", unwrapped.forward)
            self.forward = torch.compile(forward, dynamic=not fixed, **compile_options(args)) \
                if args.torch_compile else forward
            self.autocast_dtype = torch.bfloat16 if args.mixed_precision == "bf16" else None
        self.tokens_seen = 0
        self._exposures = (0, np.zeros(len(stream.people), dtype=np.int64))  # (after step, counts)
        self.peak_flops = peak_flops(accelerator.device, args.peak_tflops)

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
        self._exposures = (state["step"], self.stream.exposures(state["step"]))  # replayed once
        return state["step"]

    def exposures(self, step: int) -> np.ndarray:
        """How many times each individual has been drawn in the first `step` steps (counted as steps are
        drawn)."""
        done, counts = self._exposures
        return counts.copy() if step == done else self.stream.exposures(step)

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
        for callback in self.callbacks:
            callback.on_step(self, step)
        if self.checkpointer is not None and self.checkpointer.due(step):
            self._save_resume(step)

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step on the global batch drawn at `step`; returns this process's share of its
        mean token loss (summed over processes, it is the global batch's mean)."""
        batch = self.loader.get(step)
        total = self._direct_step(batch) if self.direct else self._accelerate_step(batch)
        self.scheduler.step()
        self.tokens_seen += batch.n_tokens
        done, counts = self._exposures
        if done == step:
            self._exposures = (step + 1, counts + np.bincount(batch.who, minlength=len(counts)))
        return total

    def _direct_step(self, batch) -> torch.Tensor:
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

    def _speed(self, steps: int, tokens: int, seconds: float) -> dict[str, float]:
        speed = {"perf/ms_per_step": 1000 * seconds / steps, "perf/tokens_per_s": tokens / seconds}
        if self.peak_flops:
            config = self.accelerator.unwrap_model(self.model, keep_torch_compile=False).config
            per_token = flops_per_token(config, tokens / (steps * self.args.batch_size))
            peak = self.peak_flops * self.accelerator.num_processes
            speed["perf/mfu"] = per_token * speed["perf/tokens_per_s"] / peak
        return speed

    def fit(self, start_step: int = 0) -> None:
        """Train from `start_step` (0, or the step of a loaded resume checkpoint) to args.max_steps; on
        SIGTERM or a first Ctrl-C, save a resume checkpoint after the current step and stop."""
        self.writer = BackgroundWriter()
        # On a CPU, denormal floats (tiny second moments and probabilities) take a slow path: flushing them to 0
        # makes the demo's step 9% faster and left its trajectory bit-identical.
        flushes = self.accelerator.device.type == "cpu" and torch.set_flush_denormal(True)  # False: unsupported
        with StopSignal() as self.stop:
            try:
                self._fit(start_step)
            finally:
                if flushes:
                    torch.set_flush_denormal(False)
                self.loader.close()
                self.writer.close()  # checkpoints already snapshotted are written, whatever stopped training

    def _fit(self, start_step: int) -> None:
        accelerator, args = self.accelerator, self.args
        self.model.train()
        for callback in self.callbacks:
            callback.on_train_begin(self, start_step)
        fit_start = time.perf_counter()
        if start_step == 0:
            if self._writes_at(0):
                self._check_weights(0)
            self._call(0)
        callbacks_total = time.perf_counter() - fit_start
        bar = tqdm(initial=start_step, total=args.max_steps, disable=not accelerator.is_main_process,
                   desc="training")
        running = torch.zeros((), device=accelerator.device)
        window_start, window_tokens, window_steps, in_callbacks = time.perf_counter(), self.tokens_seen, 0, 0.0
        timed_steps, compile_seconds = 0, 0.0  # steps in the speed window; the compiling first step, on its own
        try:  # the bar is closed before any error is printed
            for step in range(start_step + 1, args.max_steps + 1):
                running += self.train_step(step - 1)
                window_steps += 1
                timed_steps += 1
                if args.torch_compile and step == start_step + 1:  # compiles: left out of ms/step and MFU
                    _synchronize(accelerator.device)
                    compile_seconds = time.perf_counter() - window_start
                    window_start, window_tokens, timed_steps = time.perf_counter(), self.tokens_seen, 0
                logged = step % args.logging_steps == 0 or step == args.max_steps
                if logged:
                    loss = accelerator.reduce(running, reduction="sum").item() / window_steps  # waits for the device
                    _check_finite(loss, step)
                    seconds = time.perf_counter() - window_start - in_callbacks
                    speed = self._speed(timed_steps, self.tokens_seen - window_tokens, seconds) if timed_steps else {}
                    lr = self.scheduler.get_last_lr()[0]
                    accelerator.log({"train/loss": loss, "train/lr": lr, **speed}, step=step)
                    bar.set_postfix(loss=f"{loss:.3f}", **({"tok_s": f"{speed['perf/tokens_per_s']:,.0f}"}
                                                           if speed else {}))
                    running.zero_()
                    window_start, window_tokens, window_steps, timed_steps = time.perf_counter(), self.tokens_seen, 0, 0
                    in_callbacks = 0.0
                if self._writes_at(step):  # never write weights or evaluations of a blown-up model
                    if not logged:
                        _check_finite(accelerator.reduce(running.clone(), reduction="sum").item(), step)
                    self._check_weights(step)
                bar.update()
                callbacks_start = time.perf_counter()
                self._call(step)
                in_callbacks += time.perf_counter() - callbacks_start
                callbacks_total += time.perf_counter() - callbacks_start
                if self.stop.requested(accelerator, step, args.logging_steps):
                    self._stop_after(step)
        finally:
            bar.close()
        steps = args.max_steps - start_step
        training = time.perf_counter() - fit_start - callbacks_total - compile_seconds
        per_step = 1000 * training / max(steps - (compile_seconds > 0), 1)
        self.summary = (f"trained {steps:,} steps in {training:.1f} s ({per_step:.2f} ms/step); compile "
                        f"{compile_seconds:.1f} s; evaluations and checkpoints {callbacks_total:.1f} s")

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


def _local(parameter: torch.Tensor) -> torch.Tensor:
    """This process's part of a parameter: its DeepSpeed ZeRO-3 partition or DTensor shard, else itself."""
    if hasattr(parameter, "ds_tensor"):
        return parameter.ds_tensor
    return parameter.to_local() if hasattr(parameter, "to_local") else parameter


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise RunError(f"training loss is {loss} at step {step}: lower learning_rate (or add warmup_steps); no "
                       f"checkpoint was written after it, so rerunning resumes from the last good one")


class StopSignal:
    """Turns SIGTERM (a cluster's pre-emption, `kill`) and a first Ctrl-C (SIGINT) into a request to stop
    after the current step; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    @property
    def flag(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print("\nCtrl-C: stopping after this step with a resume checkpoint (press it again to stop at once)",
                  file=sys.stderr)
        self.signum = signum

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
