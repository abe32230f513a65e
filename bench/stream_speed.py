"""Biographies generated and tokenized per second, on one core: the vectorised stream (training batches,
padded to the recipe's fixed length, without marks; and with marks, as analyses ask) against the per-row
loop it replaced and against rendering text and running the fast tokenizer, in the same process.

    python bench/stream_speed.py --corpus corpora/demo [--batch_size 128 --steps 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/stream_speed.py`: the repo root, whatever the cwd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen import ATTRIBUTES, Corpus
from data_gen.columns import as_list
from tests.test_stream import _landed_batch


def render_texts(columns: dict[str, list[str]], templates: dict[str, list[str]], stream, step: int) -> list[str]:
    """The same biographies as `stream.batch(step)`, as text."""
    who, order, template = stream.draw(step)
    return [" ".join(templates[ATTRIBUTES[a]][chosen[a]].format(name=columns["name"][i],
                                                                value=columns[ATTRIBUTES[a]][i])
                     for a in sentence_order)
            for i, sentence_order, chosen in zip(who.tolist(), order.tolist(), template.tolist())]


def rate(build, steps: int, batch_size: int) -> float:
    start = time.perf_counter()
    for step in range(steps):
        build(step)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    corpus = Corpus(args.corpus)
    stream = corpus.stream(args.batch_size, seed=0)
    columns = {c: as_list(corpus.dataset["train"], c) for c in ("name", *ATTRIBUTES)}  # in memory, to be fair
    rows = {
        "vectorised, training (fixed length, no marks)": rate(
            lambda s: stream.batch(s, length=stream.max_length, marks=False), args.steps, args.batch_size),
        "vectorised, with marks": rate(lambda s: stream.batch(s), args.steps, args.batch_size),
        "per-row loop (landed), with marks": rate(lambda s: _landed_batch(stream, s), args.steps, args.batch_size),
        "render text + fast tokenizer": rate(
            lambda s: corpus.tokenizer(render_texts(columns, corpus.template_texts, stream, s), padding=True),
            max(args.steps // 4, 1), args.batch_size),
    }
    loop = rows["per-row loop (landed), with marks"]
    print(f"{'':<48}{'biographies/s':>14}{'vs loop':>9}")
    for name, value in rows.items():
        print(f"{name:<48}{value:>14,.0f}{value / loop:>8.1f}x")
    print(f"({args.batch_size} biographies a step, {len(corpus.split('train')):,} individuals, one core)")


if __name__ == "__main__":
    main()
