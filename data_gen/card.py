"""The dataset card (README.md) written into every corpus folder."""

from __future__ import annotations

import yaml
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from .config import CorpusConfig
from .stream import BiographyStream
from .tokens import TemplateTokens, individual_tokens


def dataset_card(config: CorpusConfig, rows: dict[str, int], first: Dataset, tokenizer: PreTrainedTokenizerBase,
                 templates: TemplateTokens) -> str:
    """The card of a corpus with `rows` in each split, whose example biography is that of `first` (the first
    training individual's row)."""
    people = individual_tokens(first, tokenizer)
    stream = BiographyStream(people, templates, tokenizer.bos_token_id, tokenizer.eos_token_id,
                             tokenizer.pad_token_id, 1, config.seed)
    example = tokenizer.decode(stream.batch(0)["input_ids"][0], skip_special_tokens=True).strip()
    table = "\n".join(f"| `{split}` | {count:,} |" for split, count in rows.items())
    return f"""---
pretty_name: Synthetic biographies
tags: [synthetic, factual-recall, biographies]
license: cc-by-4.0
---
# Synthetic biographies

A synthetic fact corpus for studying how language models learn facts (after Zucchet et
al., 2025, "How do language models learn facts? Dynamics, curricula and hallucinations").
Built with `python -m data_gen build` from the configuration below; the same configuration
gives the same bytes.

| split | rows |
|---|---|
{table}

- `train`, `heldout`, `finetune`: individuals (unique full names; six attributes drawn
  uniformly and independently). `heldout` individuals are never trained on; `finetune`
  individuals are reserved for a second training stage.
- `eval_seen`, `eval_heldout`, `eval_finetune`: one query per individual of `train`, `heldout` and
  `finetune`, attribute and evaluation template
  (`<bos>` + sentence, value tokens at `[value_start, value_end)`).
- Each individual has {config.n_train_templates} training templates per attribute
  (`train_templates`); the others (`eval_templates`) are kept for evaluation.
- Training biographies are not stored: they are drawn on the fly (six sentences in random
  order, a random training template each), see `data_gen.stream`.
- Vocabulary: {len(tokenizer):,} tokens; every name part and value is one token (birth
  dates are day, month and year tokens).

An example biography:

> {example}

## Builder configuration

```yaml
{yaml.safe_dump(config.to_dict(), sort_keys=False).strip()}
```

Name lists: US Census 1990 (public domain); cities: GeoNames (CC BY 4.0); see
`data_gen/resources/SOURCES.md` in the project for every list's origin.
"""
