"""Biographies generated and tokenized per second: our id-assembling stream against the
obvious baseline (render each biography as text, then run the fast tokenizer on the batch).

    python bench/stream_speed.py --corpus corpora/demo [--batch_size 128 --steps 50]
"""

from __future__ import annotations

import argparse
import time

from data_gen import ATTRIBUTES, Corpus
from data_gen.columns import as_list


def render_texts(columns: dict[str, list[str]], templates: dict[str, list[str]], stream, step: int) -> list[str]:
    """The same biographies as `stream.batch(step)`, as text."""
    who, order, template = stream.draw(step)
    return [" ".join(templates[ATTRIBUTES[a]][chosen[a]].format(name=columns["name"][i],
                                                                value=columns[ATTRIBUTES[a]][i])
                     for a in sentence_order)
            for i, sentence_order, chosen in zip(who.tolist(), order.tolist(), template.tolist())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="corpora/demo")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    corpus = Corpus(args.corpus)
    stream = corpus.stream(args.batch_size, seed=0)
    n = args.batch_size * args.steps

    start = time.perf_counter()
    for step in range(args.steps):
        stream.batch(step)
    ours = n / (time.perf_counter() - start)

    columns = {c: as_list(corpus.dataset["train"], c) for c in ("name", *ATTRIBUTES)}  # in memory, to be fair
    start = time.perf_counter()
    for step in range(args.steps):
        corpus.tokenizer(render_texts(columns, corpus.template_texts, stream, step), padding=True)
    baseline = n / (time.perf_counter() - start)

    print(f"{'':<34}{'biographies/s':>14}")
    print(f"{'stream (assembled token ids)':<34}{ours:>14,.0f}")
    print(f"{'render text + fast tokenizer':<34}{baseline:>14,.0f}")
    print(f"ratio: {ours / baseline:.1f}x  ({args.batch_size} biographies x {args.steps} steps, "
          f"{len(corpus.dataset['train']):,} individuals)")


if __name__ == "__main__":
    main()
