"""Training throughput, kept out of the training loop (as OLMo-core's speed monitor): per logging window,
ms per step, tokens per second and MFU; for the run, its summary line. Time in callbacks (evaluations,
checkpoints) and the compiling first step are left out of both."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .flops import flops_per_token


class SpeedMeter:
    """Told when training begins, when each step is done (with the tokens seen so far) and when callbacks
    run; `window` returns the speed since the previous one, `summary` the run's."""

    def __init__(self, device: torch.device, first_step_compiles: bool, config=None, batch_size: int = 1,
                 peak_flops: float | None = None):
        self.device, self.compiles = device, first_step_compiles
        self.config, self.batch_size, self.peak_flops = config, batch_size, peak_flops  # MFU where peak is known
        self.steps, self.compile_seconds, self.callback_seconds = 0, 0.0, 0.0
        self.begin(0)

    def begin(self, tokens: int) -> None:
        """Training starts now, `tokens` seen so far."""
        self.run_start = time.perf_counter()
        self.new_window(tokens)

    def new_window(self, tokens: int) -> None:
        """A logging window starts now, `tokens` seen so far."""
        self.window_start, self.window_tokens, self.window_steps, self.window_callbacks = (time.perf_counter(), tokens,
                                                                                           0, 0.0)

    @contextmanager
    def callbacks(self) -> Iterator[None]:
        """Time spent in callbacks, left out of the speed."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.window_callbacks += time.perf_counter() - start
            self.callback_seconds += time.perf_counter() - start

    def stepped(self, tokens: int) -> None:
        """A step is done, `tokens` seen in all; the compiling first step is timed on its own."""
        self.steps += 1
        self.window_steps += 1
        if self.compiles and self.steps == 1:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_seconds = time.perf_counter() - self.window_start
            self.new_window(tokens)

    def window(self, tokens: int) -> dict[str, float]:
        """The speed since the previous window (none if it held only the compiling step); starts the next."""
        seconds = time.perf_counter() - self.window_start - self.window_callbacks
        steps, window_tokens = self.window_steps, tokens - self.window_tokens
        self.new_window(tokens)
        if not steps:
            return {}
        speed = {"perf/ms_per_step": 1000 * seconds / steps, "perf/tokens_per_s": window_tokens / seconds}
        if self.peak_flops:
            per_token = flops_per_token(self.config, window_tokens / (steps * self.batch_size))
            speed["perf/mfu"] = per_token * speed["perf/tokens_per_s"] / self.peak_flops
        return speed

    @property
    def summary(self) -> str:
        training = time.perf_counter() - self.run_start - self.callback_seconds - self.compile_seconds
        per_step = 1000 * training / max(self.steps - (self.compile_seconds > 0), 1)
        return (f"trained {self.steps:,} steps in {training:.1f} s ({per_step:.2f} ms/step); compile "
                f"{self.compile_seconds:.1f} s; evaluations and checkpoints {self.callback_seconds:.1f} s")
