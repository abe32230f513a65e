"""The corpus builder: determinism, names, splits, templates, tokenizer, queries, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets.config
import numpy as np
import pytest
from datasets import Dataset, load_from_disk
from transformers import AutoTokenizer

from data_gen import ATTRIBUTES, Corpus, CorpusConfig, RecipeError
from data_gen import builder, shards
from data_gen.builder import build
from data_gen.population import draw_population
from data_gen.resources import load_pools
from data_gen.tables import individuals_nbytes, queries_nbytes
from data_gen.tokens import TemplateTokens
from data_gen.tokenizer import build_tokenizer
from data_gen.tokens import value_tokens

from .conftest import small_config


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_config_gives_identical_bytes(tmp_path, corpus_dir):
    again = build(small_config(tmp_path / "again"))
    assert _files(again) == _files(corpus_dir)
    other = build(small_config(tmp_path / "other", seed=4))
    assert _files(other)["train/data-00000-of-00001.arrow"] != _files(corpus_dir)["train/data-00000-of-00001.arrow"]


def test_the_bytes_of_a_corpus_are_those_it_had_when_built_in_memory(corpus_dir):
    # the corpus fingerprint (sha256 of every file's sha256) of this config as the builder wrote it when it
    # held the whole DatasetDict in memory and called save_to_disk (commit a987d77): rebuilt corpora keep the
    # fingerprint their runs recorded
    assert Corpus(corpus_dir).fingerprint() == "85775723f7e30d2b"


def _saved_by_datasets(split: Path, out: Path) -> dict[str, bytes]:
    """The split as `Dataset.save_to_disk` writes it from one in-memory table of its rows."""
    loaded = load_from_disk(str(split))
    table = loaded.with_format("arrow")[:].combine_chunks()
    fingerprint = json.loads((split / "state.json").read_text())["_fingerprint"]
    Dataset(table, fingerprint=fingerprint).save_to_disk(str(out))
    return _files(out)


def test_chunks_and_shards_give_the_files_save_to_disk_gives(tmp_path, monkeypatch):
    """Chunks of 7 individuals (queries cut across write batches) and 40 kB shards (several per split, of
    unequal rows): every split's files are those datasets writes from the whole split at once."""
    monkeypatch.setattr(builder, "CHUNK", 7)
    monkeypatch.setattr(datasets.config, "MAX_SHARD_SIZE", "40KB")
    pending = []
    write = shards.SplitWriter.write
    monkeypatch.setattr(shards.SplitWriter, "write", lambda self, table: (write(self, table),
                                                                          pending.append(len(self.pending))))
    folder = build(small_config(tmp_path / "chunked", n_individuals=90, n_heldout=11, n_finetune=13))
    splits = load_from_disk(str(folder))
    assert {split: len(rows) for split, rows in splits.items()} == {
        "train": 90, "heldout": 11, "finetune": 13, "eval_seen": 2700, "eval_heldout": 330, "eval_finetune": 390}
    assert len(list((folder / "eval_seen").glob("*.arrow"))) > 5 and len(list((folder / "train").glob("*.arrow"))) == 1
    for split in splits:
        assert _files(folder / split) == _saved_by_datasets(folder / split, tmp_path / "reference" / split), split
    assert max(pending) < 7 * 30 + 1000 + shards.LOOKAHEAD  # one chunk of queries, one batch and its lookahead


def test_split_sizes_are_counted_as_pyarrow_counts_them(corpus_dir):
    """`Table.nbytes` of each split held as one table (by which save_to_disk shards it), counted without
    building the table, equals what pyarrow reports for the rows loaded and joined into one table."""
    corpus = Corpus(corpus_dir)
    config = small_config(corpus_dir)
    pools = load_pools(config)
    population = draw_population(config, pools)
    templates = TemplateTokens.from_texts(pools.templates, corpus.tokenizer)
    for split, rows, queries in (("train", slice(0, 200), "eval_seen"), ("finetune", slice(250, 300), "eval_finetune")):
        people = population.take(rows)
        joined = {name: corpus.dataset[name].with_format("arrow")[:].combine_chunks().nbytes for name in (split, queries)}
        assert individuals_nbytes(people, pools) == joined[split]
        assert queries_nbytes(people, pools, templates) == joined[queries]


def test_a_corpus_without_heldout_or_finetune_individuals_loads(tmp_path):
    folder = build(small_config(tmp_path / "c", n_individuals=20, n_heldout=0, n_finetune=0))
    splits = load_from_disk(str(folder))
    assert {split: len(rows) for split, rows in splits.items()} == {
        "train": 20, "heldout": 0, "finetune": 0, "eval_seen": 600, "eval_heldout": 0, "eval_finetune": 0}
    assert splits["eval_heldout"].features == splits["eval_seen"].features


def test_loads_with_plain_hf_calls(corpus_dir):
    dataset = load_from_disk(str(corpus_dir))
    assert {s: len(d) for s, d in dataset.items()} == {
        "train": 200, "heldout": 50, "finetune": 50, "eval_seen": 200 * 6 * 5, "eval_heldout": 50 * 6 * 5,
        "eval_finetune": 50 * 6 * 5}
    tokenizer = AutoTokenizer.from_pretrained(str(corpus_dir))
    assert tokenizer.bos_token == "<bos>" and tokenizer.pad_token == "<pad>"
    manifest = json.loads((corpus_dir / "manifest.json").read_text())
    assert manifest["num_rows"]["train"] == 200 and "train/data-00000-of-00001.arrow" in manifest["sha256"]
    assert "n_individuals: 200" in (corpus_dir / "README.md").read_text()


def test_full_names_unique_and_splits_disjoint(corpus):
    names = [n for split in ("train", "heldout", "finetune") for n in corpus.dataset[split]["name"]]
    assert len(names) == len(set(names)) == 300
    ids = [i for split in ("train", "heldout", "finetune") for i in corpus.dataset[split]["id"]]
    assert sorted(ids) == list(range(300))


def test_template_split_per_individual(corpus):
    train = np.array(corpus.dataset["train"]["train_templates"])
    held = np.array(corpus.dataset["train"]["eval_templates"])
    assert train.shape == (200, 6, 20) and held.shape == (200, 6, 5)
    both = np.sort(np.concatenate([train, held], axis=-1), axis=-1)
    assert (both == np.arange(25)).all()  # every template exactly once per individual and attribute
    assert len({tuple(h) for h in held[:, 0]}) > 100  # the held-out five differ across individuals


def test_names_and_values_are_single_tokens(corpus):
    tokenizer, people = corpus.tokenizer, corpus.dataset["train"]
    for row in people.select(range(20)):
        encoded = tokenizer(row["name"], add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_ids_to_tokens(encoded) == [row["first_name"], row["middle_name"], row["last_name"]]
        for attribute in ATTRIBUTES:
            expected = value_tokens(attribute, row[attribute])
            assert len(expected) == (3 if attribute == "birth_date" else 1)
            encoded = tokenizer(row[attribute], add_special_tokens=False)["input_ids"]
            assert tokenizer.convert_ids_to_tokens(encoded) == expected


def test_every_shipped_name_and_value_is_one_token():
    pools = load_pools(CorpusConfig(output_dir="unused"))
    tokenizer = build_tokenizer(pools)
    entities = pools.tokens()
    assert "University of California, Berkeley" in entities and "Procter & Gamble" in entities
    for entity in entities:
        assert tokenizer.tokenize(entity) == [entity]
    assert tokenizer.tokenize("was born in New York City.")[-2:] == ["New York City", "."]


def test_queries_match_tokenizer_and_mark_values(corpus):
    queries = corpus.dataset["eval_seen"]
    people = corpus.dataset["train"]
    for row in queries.select(range(0, len(queries), 97)):
        assert corpus.tokenizer(row["text"])["input_ids"] == row["input_ids"]
        person = people[row["individual"]]
        value = corpus.tokenizer.convert_ids_to_tokens(row["input_ids"][row["value_start"]:row["value_end"]])
        assert value == value_tokens(row["attribute"], person[row["attribute"]])
        assert row["value_end"] == len(row["input_ids"]) - 1  # the value ends the sentence, before "."
        assert row["template"] in person["eval_templates"][ATTRIBUTES.index(row["attribute"])]


def test_heldout_queries_cover_heldout_individuals(corpus):
    individual = np.array(corpus.dataset["eval_heldout"]["individual"])
    assert (np.bincount(individual) == 30).all() and len(np.bincount(individual)) == 50


def test_impossible_population_is_a_clear_error(tmp_path):
    config = small_config(tmp_path / "x", n_individuals=2000, n_first_names=5, n_last_names=10)
    with pytest.raises(RecipeError, match="exceeds the 250 unique full names"):
        build(config)
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())


def test_existing_output_is_not_overwritten(corpus_dir):
    before = _files(corpus_dir)
    with pytest.raises(RecipeError, match="already exists"):
        build(small_config(corpus_dir, seed=99))
    assert _files(corpus_dir) == before


def test_pool_larger_than_list_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="n_majors=101 but .* has only 100 entries"):
        build(small_config(tmp_path / "x", n_majors=101))


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    recipe = tmp_path / "data.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'c'}\nn_individuals: 10\nn_heldotu: 5\n")
    result = subprocess.run([sys.executable, "-m", "data_gen", "build", "--config", str(recipe)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: unknown key 'n_heldotu' in recipe '{recipe}': did you mean 'n_heldout'?"
    assert not (tmp_path / "c").exists()


def test_missing_corpus_folder_is_a_clear_error(tmp_path):
    with pytest.raises(RecipeError, match="does not exist or was not built by data_gen"):
        Corpus(tmp_path / "nowhere")
