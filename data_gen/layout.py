"""The corpus folder, defined once: its files and its splits.

    corpora/demo/
      train/ heldout/ finetune/                    individuals (DatasetDict splits, Arrow)
      eval_seen/ eval_heldout/ eval_finetune/      queries of each split's individuals
      dataset_dict.json, tokenizer.json, ...       DatasetDict index and tokenizer files
      templates.yaml  builder_config.yaml  README.md (dataset card)  manifest.json (checksums, written last)
A Hub snapshot holds the splits as parquet shards in data/ instead.
"""

MANIFEST = "manifest.json"
BUILDER_CONFIG = "builder_config.yaml"
TEMPLATES = "templates.yaml"
CARD = "README.md"
DATASET_INDEX = "dataset_dict.json"
HUB_DATA = "data"  # where push_to_hub writes the parquet shards: data/<split>-*.parquet

INDIVIDUAL_SPLITS = ("train", "heldout", "finetune")
QUERY_SPLITS = {"eval_seen": "train", "eval_heldout": "heldout", "eval_finetune": "finetune"}  # queries: individuals
QUERIES_OF = {individuals: queries for queries, individuals in QUERY_SPLITS.items()}
