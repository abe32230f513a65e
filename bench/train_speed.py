"""Training speed: our step against the Hugging Face Trainer on the same model and the same
biographies, in the same process. Prints ms/step, tokens/s, MFU and the ratio.

    python bench/train_speed.py --corpus corpora/paper --model_preset 44M --batch_size 128   # a GPU
    python bench/train_speed.py --corpus corpora/demo --model_preset demo --batch_size 32    # a CPU

On a GPU both sides use bf16 and fused AdamW; `--compile` compiles both; `--hf_max_length 512`
pads the Trainer's batches to 512 tokens as a naive setup would.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments, set_seed

from data_gen import Corpus
from pipeline.config import ModelArguments, TrainArguments
from pipeline.train.flops import flops_per_token, peak_flops
from pipeline.model import build_model
from pipeline.train.trainer import Trainer as OurTrainer
from pipeline.train.trainer import make_accelerator


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.times.append(time.perf_counter() - self.start)


def time_ours(corpus: Corpus, args, warmup: int, steps: int) -> list[float]:
    set_seed(0)
    model = build_model(ModelArguments(model_preset=args.model_preset), corpus.tokenizer)
    train_args = TrainArguments(output_dir=tempfile.mkdtemp(), batch_size=args.batch_size, max_steps=warmup + steps,
                                mixed_precision=args.mixed_precision, torch_compile=args.compile, report_to="none")
    accelerator: Accelerator = make_accelerator(train_args, Path(train_args.output_dir))
    trainer = OurTrainer(train_args, model, corpus.stream(args.batch_size, seed=0), accelerator, [])
    times = []
    for step in range(warmup + steps):
        _sync()
        start = time.perf_counter()
        trainer.train_step(step)
        _sync()
        times.append(time.perf_counter() - start)
    trainer.loader.close()
    return times[warmup:]


def time_hf_trainer(corpus: Corpus, args, warmup: int, steps: int) -> list[float]:
    stream = corpus.stream(args.batch_size, seed=0)
    rows = []
    for step in range(warmup + steps):
        batch = stream.batch(step)
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
    timer = _StepTimer()
    Trainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
            callbacks=[timer]).train()
    return timer.times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--model_preset", default="demo")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--hf_max_length", type=int, default=0)
    args = parser.parse_args()
    args.mixed_precision = "bf16" if torch.cuda.is_available() else "no"
    corpus = Corpus(args.corpus)
    stream = corpus.stream(args.batch_size, seed=0)
    tokens = sum(stream.num_label_tokens(s) for s in range(args.warmup, args.warmup + args.steps)) / args.steps

    results = {"HF Trainer": time_hf_trainer(corpus, args, args.warmup, args.steps),
               "ours": time_ours(corpus, args, args.warmup, args.steps)}
    config = build_model(ModelArguments(model_preset=args.model_preset), corpus.tokenizer).config
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_flops(device)
    per_token = flops_per_token(config, tokens / args.batch_size)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}, preset {args.model_preset}, batch {args.batch_size}, {tokens:,.0f} tokens/step, "
          f"{args.mixed_precision}, compile={args.compile}")
    print(f"{'':<12}{'ms/step':>10}{'tokens/s':>14}{'MFU':>8}")
    for label, times in results.items():
        ms = 1000 * sorted(times)[len(times) // 2]
        mfu = f"{per_token * tokens / (ms / 1000) / peak:.1%}" if peak else "n/a"
        print(f"{label:<12}{ms:>10.1f}{tokens / (ms / 1000):>14,.0f}{mfu:>8}")
    hf, ours = (sorted(t)[len(t) // 2] for t in results.values())
    print(f"speed-up of ours over the HF Trainer: {hf / ours:.2f}x (median step times)")


if __name__ == "__main__":
    main()
