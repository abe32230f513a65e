"""Training speed: our step against the Hugging Face Trainer on the same model and the same
biographies, in the same process. Prints ms/step, tokens/s, MFU, peak memory and the ratio.

    python bench/train_speed.py --corpus corpora/paper --model_preset 44M --batch_size 128 --compile  # a GPU
    python bench/train_speed.py --corpus corpora/demo --model_preset demo --batch_size 32             # a CPU

On a GPU both sides use bf16 and fused AdamW; `--compile` compiles both (ours with
`--compile_mode`, default reduce-overhead: CUDA graphs over fixed shapes); `--hf_max_length 512`
pads the Trainer's batches to 512 tokens as a naive setup would. Step times are the wall time of
the measured steps (after `--warmup` steps) divided by their number, one device sync at each end,
so that a step that lets the CPU run ahead is credited for it. The first step's wall time (the compile,
when compiled) and the warmup window's (the Trainer recompiles when its batch length changes) are
reported on their own, outside ms/step. MFU counts the model's FLOPs on real tokens
(pipeline.train.flops), the same for both sides.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as `python bench/train_speed.py`: the repo root, whatever the cwd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments, set_seed

from data_gen import Corpus
from pipeline.config import ModelArguments, TrainArguments
from pipeline.model import build_model
from pipeline.train.flops import flops_per_token, peak_flops
from pipeline.train.loop import TrainingLoop
from pipeline.train.loop import make_accelerator


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_memory_gb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def _reset_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class _WindowTimer(TrainerCallback):
    """Wall times of the first step, of the first `warmup` steps and from then to the end of training."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.begin = self.first = self.warmup_seconds = self.start = self.seconds = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.begin is None:
            _sync()
            self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (1, self.warmup):
            _sync()
            now = time.perf_counter()
            if state.global_step == 1:
                self.first = now - self.begin
            if state.global_step == self.warmup:
                self.start, self.warmup_seconds = now, now - self.begin

    def on_train_end(self, args, state, control, **kwargs):
        _sync()
        self.seconds = time.perf_counter() - self.start


def time_ours(corpus: Corpus, args, warmup: int, steps: int) -> dict:
    """ms/step and peak memory of our training step, and the wall times of its first step (compile_seconds)
    and of its `warmup` steps (that first one included), both outside ms/step."""
    _reset_memory()
    set_seed(0)
    model = build_model(ModelArguments(model_preset=args.model_preset), corpus.tokenizer)
    train_args = TrainArguments(output_dir=tempfile.mkdtemp(), batch_size=args.batch_size, max_steps=warmup + steps,
                                mixed_precision=args.mixed_precision, torch_compile=args.compile,
                                torch_compile_mode=args.compile_mode, packing=getattr(args, "packing", None),
                                report_to="none")
    accelerator = make_accelerator(train_args, Path(train_args.output_dir))
    loop = TrainingLoop(train_args, model, corpus.stream(args.batch_size, seed=0), accelerator, [])
    _sync()
    begin = time.perf_counter()
    loop.train_step(0)
    _sync()
    first = time.perf_counter() - begin
    for step in range(1, warmup):
        loop.train_step(step)
    _sync()
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        loop.train_step(step)
    _sync()
    seconds = time.perf_counter() - start
    loop.loader.close()
    return {"ms_per_step": 1000 * seconds / steps, "compile_seconds": first, "warmup_seconds": start - begin,
            "peak_memory_gb": _peak_memory_gb()}


def time_hf_trainer(corpus: Corpus, args, warmup: int, steps: int) -> dict:
    """ms/step and peak memory of the Hugging Face Trainer on the same biographies, and the wall times of its
    first step and of its `warmup` steps, as time_ours."""
    _reset_memory()
    stream = corpus.stream(args.batch_size, seed=0)
    rows = []
    for step in range(warmup + steps):
        batch = stream.batch(step, marks=False)
        rows += [ids[mask == 1].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    dataset = Dataset.from_dict({"input_ids": rows})
    set_seed(0)
    model = build_model(ModelArguments(model_preset=args.model_preset), corpus.tokenizer)
    cuda = torch.cuda.is_available()
    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=warmup + steps,
        learning_rate=4e-4, weight_decay=0.1, adam_beta2=0.95, lr_scheduler_type="cosine",
        bf16=args.mixed_precision == "bf16", optim="adamw_torch_fused" if cuda else "adamw_torch",
        torch_compile=args.compile, report_to="none", logging_strategy="no", save_strategy="no",
        dataloader_drop_last=True, use_cpu=not cuda, seed=0)
    pad = {"pad_to_multiple_of": args.hf_max_length} if args.hf_max_length else {"pad_to_multiple_of": 8}
    collator = DataCollatorForLanguageModeling(corpus.tokenizer, mlm=False, **pad)
    timer = _WindowTimer(warmup)
    Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
            callbacks=[timer]).train()
    return {"ms_per_step": 1000 * timer.seconds / steps, "compile_seconds": timer.first,
            "warmup_seconds": timer.warmup_seconds, "peak_memory_gb": _peak_memory_gb()}


def step_rows(corpus: Corpus, args, warmup: int, steps: int, other_modes: tuple[str, ...] = (),
              unpacked: bool = False) -> list[dict]:
    """Both sides timed on the same model and biographies, with tokens/s, MFU and the ratio to ours: rows
    HF Trainer, ours (compiled with `args.compile_mode`; packed rows where the trainer packs by default: a
    compiled GPU step), then ours in each of `other_modes`; with `unpacked`, then ours with a row per
    biography (the other layout)."""
    stream = corpus.stream(args.batch_size, seed=0)
    tokens = sum(stream.num_label_tokens(s) for s in range(warmup, warmup + steps)) / steps
    config = build_model(ModelArguments(model_preset=args.model_preset), corpus.tokenizer).config
    per_token = flops_per_token(config, tokens / args.batch_size)
    peak = peak_flops(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [{"side": "HF Trainer" + (f" (padded to {args.hf_max_length})" if args.hf_max_length else ""),
             "compile_mode": None, **time_hf_trainer(corpus, args, warmup, steps)}]
    for mode in (args.compile_mode, *other_modes) if args.compile else (None,):
        timed = time_ours(corpus, argparse.Namespace(**{**vars(args), "compile_mode": mode or args.compile_mode}),
                          warmup, steps)
        rows.append({"side": "ours" + (f", {mode}" if mode else ""), "compile_mode": mode, **timed})
    if unpacked:
        timed = time_ours(corpus, argparse.Namespace(**{**vars(args), "packing": False}), warmup, steps)
        rows.append({"side": "ours, a row per biography", "compile_mode": None, **timed})
    ours = rows[1]["ms_per_step"]
    for row in rows:
        row["compiled"] = args.compile
        row["tokens_per_s"] = tokens / (row["ms_per_step"] / 1000)
        row["mfu"] = per_token * row["tokens_per_s"] / peak if peak else None
        row["ours_faster_by"] = row["ms_per_step"] / ours
    return rows


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--model_preset", default="demo")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile_mode", default="reduce-overhead")
    parser.add_argument("--hf_max_length", type=int, default=0)
    parser.add_argument("--packing", choices=("true", "false"), help="Packed rows or a row per biography (default: "
                                                                     "the trainer's: packed for a compiled GPU step).")
    parser.add_argument("--unpacked", action="store_true", help="Also time ours with a row per biography.")
    return parser


def main() -> None:
    args = parser().parse_args()
    args.mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    if not torch.cuda.is_available() and args.compile_mode == "reduce-overhead":
        args.compile_mode = "default"  # CUDA graphs need CUDA
    corpus = Corpus(args.corpus)
    args.packing = None if args.packing is None else args.packing == "true"
    rows = step_rows(corpus, args, args.warmup, args.steps, unpacked=args.unpacked)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{name}, preset {args.model_preset}, batch {args.batch_size}, {args.mixed_precision}, "
          f"compile={args.compile} ({args.compile_mode})")
    print(f"{'':<28}{'ms/step':>10}{'tokens/s':>14}{'MFU':>8}{'peak GiB':>10}{'1st step s':>12}{'warmup s':>10}")
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] else "n/a"
        memory = f"{row['peak_memory_gb']:.1f}" if row["peak_memory_gb"] else "n/a"
        print(f"{row['side']:<28}{row['ms_per_step']:>10.1f}{row['tokens_per_s']:>14,.0f}{mfu:>8}{memory:>10}"
              f"{row['compile_seconds']:>12.1f}{row['warmup_seconds']:>10.1f}")
    print(f"speed-up of ours over the HF Trainer: {rows[0]['ours_faster_by']:.2f}x")


if __name__ == "__main__":
    main()
