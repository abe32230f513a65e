"""Runs of a study at once, as subprocesses on the slots of this machine: CPU cores split between
`--jobs N` runs, or GPUs (`--devices 0,1 --runs_per_device K`: one CUDA_VISIBLE_DEVICES per run).

Each run writes its own log; a live table shows every run's state, step and ETA (read from its
progress bar). A failed run is retried once (it resumes from its resume checkpoint) and then reported,
never stopping the others. SIGTERM or Ctrl-C stops launching and sends SIGTERM to every child, which
saves a resume checkpoint and exits; rerunning the same command continues.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import RecipeError, RunError
from common.signals import StopSignals

PROGRESS = re.compile(rb"(\d+)/(\d+) \[[^<\]]*<([^,\]]*)")  # tqdm: "675/1500 [01:10<02:01, ..."
LOG_EVERY = 60.0  # seconds between two tables when the output is not a terminal (and nothing changed)


@dataclass
class Job:
    """One run: the module and flags it is launched with, its log, and the jobs it waits for (by name)."""

    name: str
    argv: list[str]
    log: Path
    after: tuple[str, ...] = ()
    state: str = "queued"  # queued, running, done, failed
    attempts: int = 0
    slot: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    last_line: str = ""

    def progress(self) -> tuple[str, str]:
        """The run's step (of max) and ETA from the last progress bar in its log."""
        if not self.log.is_file():
            return "", ""
        with self.log.open("rb") as f:
            f.seek(max(0, self.log.stat().st_size - 4096))
            found = PROGRESS.findall(f.read())
        if not found:
            return "", ""
        step, total, eta = found[-1]
        return f"{int(step):,}/{int(total):,}", eta.decode().strip() or "?"

    def tail(self) -> str:
        """The last line of the log that is not a progress bar."""
        if not self.log.is_file():
            return ""
        lines = [line.strip() for chunk in self.log.read_text(errors="replace").splitlines()
                 for line in chunk.split("\r") if line.strip()]
        lines = [line for line in lines if not PROGRESS.search(line.encode())]
        return lines[-1] if lines else ""


def add_pool_arguments(parser) -> None:
    """The command-line options of a pool of runs: --jobs, or --devices with --runs_per_device."""
    parser.add_argument("--jobs", type=int, help="Runs at once, as subprocesses sharing the CPU cores.")
    parser.add_argument("--devices", help="GPUs to run on, e.g. 0,1,2,3 (one CUDA_VISIBLE_DEVICES per run).")
    parser.add_argument("--runs_per_device", type=int, default=1, help="Runs sharing each GPU (default 1).")


def pool_from(args) -> Pool | None:
    """The pool those options ask for; None (runs one after another, in process) without either."""
    return Pool(slots(args.jobs, args.devices, args.runs_per_device)) if args.jobs or args.devices else None


def slots(jobs: int | None, devices: str | None, runs_per_device: int) -> list[dict[str, str]]:
    """The environment of each slot: its share of the CPU cores, and its GPU."""
    if devices:
        gpus = [d.strip() for d in devices.split(",") if d.strip()]
        if not gpus or runs_per_device < 1:
            raise RecipeError("--devices takes GPU indices such as 0,1 and --runs_per_device at least 1")
        envs = [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus for _ in range(runs_per_device)]
    else:
        if jobs is None or jobs < 1:
            raise RecipeError(f"--jobs must be at least 1, got {jobs}")
        envs = [{} for _ in range(jobs)]
    threads = str(max(1, len(os.sched_getaffinity(0)) // len(envs)))
    return [{**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for env in envs]


class Pool:
    """Runs jobs on slots, at most one job per slot, until all are done or failed."""

    def __init__(self, slot_envs: list[dict[str, str]], retries: int = 1, refresh: float = 2.0,
                 cwd: Path | None = None):
        self.slot_envs, self.retries, self.refresh, self.cwd = slot_envs, retries, refresh, cwd
        self.stop = StopSignals(on_request=self._forward, on_second=self._kill)
        self._drawn, self._last_counts, self._printed = 0, "", 0.0

    def _forward(self, signum: int) -> None:
        print(f"\n{signal.Signals(signum).name}: stopping every run after its step, each saving a resume "
              f"checkpoint", file=sys.stderr, flush=True)
        for job in self.running:
            job.process.send_signal(signal.SIGTERM)

    def _kill(self) -> None:  # a second Ctrl-C: at once
        for job in self.running:
            job.process.kill()

    def _start(self, job: Job, slot: int) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        job.attempts += 1
        with job.log.open("a") as log:
            log.write(f"\n=== attempt {job.attempts}: python {' '.join(job.argv)}\n")
            log.flush()
            job.process = subprocess.Popen([sys.executable, *job.argv], stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, **self.slot_envs[slot]}, cwd=self.cwd,
                                           start_new_session=True)  # Ctrl-C reaches the pool, which forwards it
        job.state, job.slot = "running", slot

    @property
    def running(self) -> list[Job]:
        return [job for job in self.jobs if job.state == "running"]

    def _next(self, queue: deque[Job]) -> Job | None:
        """The first queued job whose jobs to wait for are done; those waiting for a failed one fail."""
        state = {job.name: job.state for job in self.jobs}
        for job in list(queue):
            failed = [name for name in job.after if state.get(name) == "failed"]
            if failed:
                queue.remove(job)
                job.state, job.last_line = "failed", f"not run: {failed[0]} failed"
            elif all(state.get(name) == "done" for name in job.after):
                queue.remove(job)
                return job
        return None

    def run(self, jobs: list[Job], settled: Callable[[], None] | None = None) -> list[Job]:
        """Run every job, each after the jobs it waits for; returns them with their final state, calling
        `settled` whenever a job has ended for good (done or failed). Raises RunError if stopped by a signal."""
        self.jobs, queue = jobs, deque(jobs)
        unknown = {name for job in jobs for name in job.after} - {job.name for job in jobs}
        if unknown:
            raise RunError(f"runs wait for {sorted(unknown)}, which are not among the runs to do")
        shown = 0.0
        with self.stop:
            while (queue and self.stop.signum is None) or self.running:  # stopped: the queued ones wait
                free = sorted(set(range(len(self.slot_envs))) - {job.slot for job in self.running})
                while queue and free and self.stop.signum is None and (job := self._next(queue)):
                    self._start(job, free.pop(0))
                for job in self.running:
                    code = job.process.poll()
                    if code is None:
                        continue
                    job.slot = None
                    if code == 0:
                        job.state = "done"
                    elif self.stop.signum is None and job.attempts <= self.retries:
                        job.state = "queued"
                        queue.appendleft(job)  # retried at once: it resumes from its resume checkpoint
                    else:
                        job.state, job.last_line = ("stopped" if self.stop.signum else "failed"), job.tail()
                    if settled is not None and job.state in ("done", "failed"):
                        settled()
                if time.monotonic() - shown >= self.refresh:
                    self._show()
                    shown = time.monotonic()
                time.sleep(0.2)
        self._show()
        if self.stop.signum is not None:
            stopped = [job.name for job in jobs if job.state == "stopped"]
            raise RunError(f"stopped by {self.stop.name}: {len(stopped)} running runs saved their resume checkpoints; "
                           f"rerun the same command to continue", exit_code=128 + self.stop.signum)
        return jobs

    def _show(self) -> None:
        """The progress table: redrawn in place on a terminal, printed when it changes elsewhere (logs)."""
        counts = {state: sum(job.state == state for job in self.jobs) for state in ("done", "running", "failed",
                                                                                       "queued")}
        lines = [f"runs: {counts['done']} done, {counts['running']} running, {counts['failed']} failed, "
                 f"{counts['queued']} queued"]
        for job in self.running:
            step, eta = job.progress()
            lines.append(f"  {job.name:<40} slot {job.slot}  step {step or '-':>13}  eta {eta or '-'}")
        if sys.stdout.isatty():
            sys.stdout.write(f"\x1b[{self._drawn}F\x1b[J" if self._drawn else "")
            self._drawn = len(lines)
        elif lines[0] == self._last_counts and time.monotonic() - self._printed < LOG_EVERY:
            return
        self._last_counts, self._printed = lines[0], time.monotonic()
        print("\n".join(lines), flush=True)

