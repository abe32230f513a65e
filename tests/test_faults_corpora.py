"""Corpora that are missing, corrupted, outdated, rebuilt with other people or not the one a model was
pretrained on (docs/faults.md), and the corpus record every checkpoint keeps to tell them apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_gen.builder import build
from pipeline.finetune import main as finetune_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder, read_state

from .conftest import cli, interrupted_run, small_config, tiny20, tiny30, tiny_flags


def _copy_corpus(corpus_dir: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(corpus_dir, to)
    return to


def test_corrupted_missing_or_outdated_corpus(corpus_dir, tmp_path, capsys):
    broken = _copy_corpus(corpus_dir, tmp_path / "broken")
    arrow = min((broken / "train").glob("*.arrow"))
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrow.write_bytes(bytes(data))
    code, err = cli(pretrain_main, tiny20(broken, tmp_path / "run"), capsys)
    assert code == 2 and "is corrupted (it does not match manifest.json)" in err[0]
    arrow.unlink()
    code, err = cli(pretrain_main, tiny20(broken, tmp_path / "run"), capsys)
    assert code == 2 and "is missing" in err[0]
    old = _copy_corpus(corpus_dir, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    code, err = cli(pretrain_main, tiny20(old, tmp_path / "run"), capsys)
    assert code == 2 and "has format 1" in err[0] and "--overwrite true" in err[0]
    code, err = cli(pretrain_main, tiny20(tmp_path / "nowhere" / "corpus" / "x", tmp_path / "run"), capsys)
    assert code == 2 and "does not exist or was not built by data_gen" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_rebuilt_corpus_is_not_resumed(tmp_path, capsys, monkeypatch):
    corpus = build(small_config(tmp_path / "a"))
    out = tmp_path / "run"
    interrupted_run(corpus, out, 21, monkeypatch, save_steps=10)
    assert read_state(RunFolder(out).latest_resume_checkpoint())["corpus"]["seed"] == 3
    trajectory = (out / "trajectory.jsonl").read_text()
    build(small_config(corpus, seed=1, overwrite=True))  # same tokenizer, other people
    code, err = cli(pretrain_main, tiny30(corpus, out, save_steps=10), capsys)
    assert code == 2 and len(err) == 1 and "was trained on corpus" in err[0] and "seed 3" in err[0]
    assert "now holds another" in err[0] and "seed 1" in err[0]
    assert (out / "trajectory.jsonl").read_text() == trajectory  # nothing touched
    build(small_config(corpus, seed=3, overwrite=True))  # rebuilt as it was: the same bytes, so it resumes
    assert cli(pretrain_main, tiny30(corpus, out, save_steps=10), capsys)[0] == 0


def test_fine_tuning_refuses_a_model_pretrained_on_other_individuals(corpus_dir, tmp_path, capsys):
    pretrained = tmp_path / "pretrained"
    pretrain_main(tiny30(corpus_dir, pretrained, max_steps=4, eval_points=0, checkpoint_points=1, save_steps=0))
    init = RunFolder(pretrained).checkpoint(4)
    assert read_state(init)["corpus"]["train_fingerprint"]
    other = build(small_config(tmp_path / "other", seed=11))  # the same tokenizer, other people
    argv = tiny_flags(other, tmp_path / "ft", model_preset=None, init_from=init, n_individuals_finetune=20,
                      max_steps=2, eval_points=0, checkpoint_points=1, save_steps=0, eval_individuals=20)
    code, err = cli(finetune_main, argv, capsys)
    assert code == 2 and len(err) == 1 and f"init_from '{init}' was pretrained on corpus '{corpus_dir}'" in err[0]
    assert "--allow_other_corpus true" in err[0] and not (tmp_path / "ft").exists()
    assert cli(finetune_main, [*argv, "--allow_other_corpus", "true"], capsys)[0] == 0
    assert "**Another corpus**" in (tmp_path / "ft" / "report.md").read_text()
    same = tiny_flags(corpus_dir, tmp_path / "ft-same", model_preset=None, init_from=init, n_individuals_finetune=20,
                      max_steps=2, eval_points=0, checkpoint_points=1, save_steps=0, eval_individuals=20)
    assert cli(finetune_main, same, capsys)[0] == 0
    assert "Another corpus" not in (tmp_path / "ft-same" / "report.md").read_text()


def test_exposures_are_recorded_with_the_corpus(corpus_dir, tmp_path):
    out = tmp_path / "run"
    pretrain_main(tiny30(corpus_dir, out, max_steps=3, eval_points=0, checkpoint_points=1, save_steps=3))
    for checkpoint in (RunFolder(out).checkpoint(3), RunFolder(out).latest_resume_checkpoint()):
        record = read_state(checkpoint)["corpus"]
        assert record["path"] == str(corpus_dir) and record["seed"] == 3 and len(record["fingerprint"]) == 16
    assert np.load(RunFolder(out).checkpoint(3) / "exposures.npy").sum() == 3 * 16
