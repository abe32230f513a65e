"""The lm-evaluation-harness export (`python -m data_gen export-lm-eval`): one doc per held-out query of each group,
cut at the evaluator's value boundary; clear errors and no half-written folder; and lm-eval's `acc` on a pretrained
checkpoint equal, query by query, to the pipeline's attribute accuracy."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from accelerate import Accelerator
from transformers import AutoModelForCausalLM

from data_gen import ATTRIBUTES, Corpus
from data_gen.__main__ import main as data_gen_main
from data_gen.builder import build
from data_gen.columns import as_array, as_list
from data_gen.lm_eval_tasks import GROUPS
from data_gen.population import spread
from pipeline.evaluation import Evaluator
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import QUERY_FACTS, RunFolder, checkpoint_name

from .conftest import cli, one_error_line, small_config, tiny_flags

STEPS, PER_GROUP = 100, 10  # by then the tiny model knows over a quarter of the seen queries


def export(corpus_dir, out, *extra) -> list[str]:
    return ["export-lm-eval", "--corpus", str(corpus_dir), "--output_dir", str(out), *extra]


def docs(folder, group) -> pd.DataFrame:
    return pd.read_json(folder / f"{group}.jsonl", lines=True, dtype=False)


@pytest.fixture(scope="module")
def few_dir(tmp_path_factory):
    """A corpus of 20 seen, 10 held-out and 10 new individuals: few enough for a tiny model to learn in seconds."""
    return build(small_config(tmp_path_factory.mktemp("corpus") / "few", n_individuals=20, n_heldout=10, n_finetune=10))


@pytest.fixture(scope="module")
def pretrained(few_dir, tmp_path_factory):
    """A tiny model pretrained on `few_dir`, evaluated at its last step on PER_GROUP seen and held-out individuals."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    pretrain_main(tiny_flags(few_dir, out, batch_size=32, learning_rate=1e-2, max_steps=STEPS, eval_points=1,
                             checkpoint_points=1, save_steps=0, eval_individuals=PER_GROUP, eval_batch_size=512))
    return out


def test_one_doc_per_held_out_query_cut_at_the_value(corpus_dir, corpus, tmp_path, capsys):
    data_gen_main(["--help"])
    assert "export-lm-eval --corpus <folder> --output_dir <folder>" in capsys.readouterr().out
    assert cli(data_gen_main, export(corpus_dir, tmp_path / "tasks", "--individuals", "7"), capsys)[0] == 0
    for group, split in GROUPS.items():
        rows = docs(tmp_path / "tasks", group)
        assert len(rows) == 7 * 6 * 5  # individuals x attributes x held-out templates (25 per attribute, 20 trained)
        assert sorted(set(rows["individual"])) == spread(np.arange(len(corpus.split(split))), 7).tolist()
        queries = corpus.queries(split, rows["individual"].unique())
        assert rows["attribute"].tolist() == as_list(queries, "attribute")
        assert rows["template"].tolist() == as_array(queries, "template").tolist()
        up_to_value = (rows["context"] + rows["target"]).tolist()
        assert up_to_value == [text[:len(c)] for c, text in zip(up_to_value, as_list(queries, "text"))]
        ids, value_start, value_end = (as_list(queries, "input_ids"), as_array(queries, "value_start"),
                                       as_array(queries, "value_end"))  # <bos> + context: the tokens before the value
        assert corpus.tokenizer(rows["context"].tolist())["input_ids"] == [i[:s] for i, s in zip(ids, value_start)]
        assert corpus.tokenizer(up_to_value)["input_ids"] == [i[:e] for i, e in zip(ids, value_end)]
    record = json.loads((tmp_path / "tasks" / "export.json").read_text())
    assert record["group"] == "small_facts" and list(record["tasks"]) == [f"small_facts_{g}" for g in GROUPS]
    assert cli(data_gen_main, export(corpus_dir, tmp_path / "all"), capsys)[0] == 0
    assert [len(docs(tmp_path / "all", g)) for g in GROUPS] == [200 * 30, 50 * 30, 50 * 30]


def test_bad_input_is_one_error_line_and_writes_nothing(corpus_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tasks"
    incomplete = tmp_path / "incomplete"
    shutil.copytree(corpus_dir, incomplete)
    next((incomplete / "eval_seen").glob("*.arrow")).unlink()
    for argv, message in [
        (export(tmp_path / "nowhere", out), "does not exist or was not built by data_gen"),
        (export(incomplete, out), "is missing"),
        (export(corpus_dir, out, "--individuals", "-1"), "--individuals must be at least 0"),
    ]:
        code, err = cli(data_gen_main, argv, capsys)
        assert code == 2 and one_error_line(err) and message in err[-1]
        assert not out.exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    code, err = cli(data_gen_main, export(corpus_dir, tmp_path / "notes", "--overwrite"), capsys)
    assert code == 2 and "not an lm-eval export (keep.txt)" in err[-1]
    assert cli(data_gen_main, export(corpus_dir, out, "--individuals", "2"), capsys)[0] == 0
    code, err = cli(data_gen_main, export(corpus_dir, out, "--individuals", "3"), capsys)
    assert code == 2 and "already holds an lm-eval export" in err[-1] and len(docs(out, "seen")) == 2 * 30

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("data_gen.lm_eval_tasks.yaml.safe_dump", full_disk)
    assert cli(data_gen_main, export(corpus_dir, out, "--individuals", "3", "--overwrite"), capsys)[0] == 1
    assert len(docs(out, "seen")) == 2 * 30 and sorted(p.name for p in tmp_path.iterdir()) == [
        "incomplete", "notes", "tasks"]  # the earlier export kept, no temporary folder left
    monkeypatch.undo()
    assert cli(data_gen_main, export(corpus_dir, out, "--individuals", "3", "--overwrite"), capsys)[0] == 0
    assert len(docs(out, "seen")) == 3 * 30


def by_query(individual, attribute, template, values) -> pd.Series:
    """`values` indexed by query, (individual, attribute name, template), in that order."""
    index = pd.MultiIndex.from_arrays([np.asarray(individual, dtype=np.int64), np.asarray(attribute, dtype=object),
                                       np.asarray(template, dtype=np.int64)])
    return pd.Series(np.asarray(values, dtype=bool), index=index).sort_index()


def evaluator_correct(corpus_dir, checkpoint) -> dict[str, pd.Series]:
    """Per group, whether the pipeline's evaluator gets each query about PER_GROUP individuals right."""
    corpus = Corpus(corpus_dir)
    groups = {group: (split, spread(np.arange(len(corpus.split(split))), PER_GROUP)) for group, split in GROUPS.items()}
    evaluator = Evaluator(corpus, groups, batch_size=64)
    scores = evaluator.score_groups(AutoModelForCausalLM.from_pretrained(checkpoint), Accelerator(cpu=True))
    return {group: by_query(s["individual"], np.array(ATTRIBUTES)[s["attribute"]], evaluator.templates[group],
                            s["correct"]) for group, s in scores.items()}


@pytest.mark.slow
def test_lm_eval_acc_is_the_pipelines_accuracy(few_dir, pretrained, tmp_path, capsys):
    import lm_eval

    checkpoint = pretrained / "checkpoints" / checkpoint_name(STEPS)
    assert (checkpoint / "tokenizer.json").is_file()
    tasks = tmp_path / "tasks"
    assert cli(data_gen_main, export(few_dir, tasks, "--individuals", str(PER_GROUP)), capsys)[0] == 0
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={checkpoint},dtype=float32",
                                      tasks=["few_facts"], task_manager=lm_eval.tasks.TaskManager(
                                          include_path=str(tasks)), device="cpu", batch_size=64, log_samples=True)
    facts = pd.read_parquet(RunFolder(pretrained).facts_file(QUERY_FACTS, STEPS))  # the run's final evaluation
    for group, correct in evaluator_correct(few_dir, checkpoint).items():
        samples = results["samples"][f"few_facts_{group}"]
        acc = by_query(*zip(*[(s["doc"]["individual"], s["doc"]["attribute"], s["doc"]["template"], s["acc"])
                              for s in samples]))
        assert len(acc) == PER_GROUP * 6 * 5 and acc.equals(correct)
        assert results["results"][f"few_facts_{group}"]["acc,none"] == pytest.approx(correct.mean(), abs=1e-12)
        if group != "new":  # pretraining evaluates the seen and held-out ones
            run = facts[facts["group"] == group]
            assert by_query(run["individual"], run["attribute"], run["template"], run["correct"]).equals(correct)
        print(f"{group}: lm-eval acc {acc.mean():.4f}, pipeline accuracy {correct.mean():.4f}")
