"""Output folders (docs/faults.md): folders of other files or held by another process, --overwrite into
what it is not for, paths that cannot be written, a full disk and damaged checkpoints."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from data_gen.__main__ import main as data_main
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import CHECKPOINTS, RunFolder, checkpoint_name, complete_checkpoints

from .conftest import REPO, cli, one_error_line, tiny20, tiny30


def test_output_folder_of_another_run_or_of_other_files(corpus_dir, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err = cli(pretrain_main, tiny20(corpus_dir, other), capsys)
    assert code == 2 and "holds files that are not a run" in err[0] and (other / "notes.txt").read_text() == "mine"


def test_disk_full_while_saving_keeps_the_previous_checkpoint(corpus_dir, tmp_path, capsys, monkeypatch):
    from transformers import PreTrainedModel

    original = PreTrainedModel.save_pretrained

    def full_at_step_20(self, path, *args, **kwargs):
        if Path(path).name.endswith(checkpoint_name(20)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_at_step_20)
    out = tmp_path / "run"
    code, err = cli(pretrain_main, tiny20(corpus_dir, out), capsys)
    assert code == 1 and one_error_line(err) and "No space left on device" in err[-1] and "free disk space" in err[-1]
    permanent = complete_checkpoints(out / CHECKPOINTS)
    assert [p.name for p in permanent] == [checkpoint_name(0), checkpoint_name(1)]  # the earlier ones, complete
    assert not list((out / CHECKPOINTS).glob(".tmp-*"))  # no half-written folder left
    AutoModelForCausalLM.from_pretrained(permanent[-1])
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", original)
    assert cli(pretrain_main, tiny20(corpus_dir, out), capsys)[0] == 0  # space back: rerun resumes and finishes
    assert max(r["step"] for r in RunFolder(out).trajectory()) == 20


def _background_run(corpus_dir, out, **values) -> subprocess.Popen:
    """A long run in another process, returned once it has evaluated step 0."""
    argv = tiny30(corpus_dir, out, max_steps=100_000, save_steps=50_000, **values)
    process = subprocess.Popen([sys.executable, "-m", "pipeline.pretrain", *argv], cwd=REPO, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "trajectory.jsonl").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[1][-2000:]
    return process


@pytest.mark.slow
def test_a_run_folder_is_held_by_one_run_and_a_killed_holder_is_taken_over(corpus_dir, tmp_path, capsys):
    out = tmp_path / "conc"
    first = _background_run(corpus_dir, out)
    before = (out / "run_config.yaml").read_text()
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, save_steps=10), capsys)
    assert code == 2 and len(err) == 1
    assert f"run folder '{out}' is in use by pid {first.pid}" in err[0] and "pipeline.pretrain" in err[0]
    assert (out / "run_config.yaml").read_text() == before and first.poll() is None  # the first run goes on
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, save_steps=10, overwrite_output_dir="true"), capsys)
    assert code == 2 and "is in use by" in err[0]  # not even when asked to overwrite
    first.send_signal(signal.SIGKILL)
    first.wait()
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, max_steps=2, overwrite_output_dir="true"), capsys)
    assert code == 0 and any(f"taking over run folder '{out}' from pid {first.pid}" in line for line in err)


def test_a_second_corpus_build_into_the_same_folder_is_refused(tmp_path, capsys):
    from data_gen.folders import exclusive

    target = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom data_gen.folders import exclusive\n"
                               f"with exclusive({str(target)!r}, 'corpus'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    code, err = cli(data_main, ["build", "--config", str(REPO / "recipes/demo/data.yaml"), "--output_dir",
                                str(target), "--n_individuals", "50", "--n_heldout", "0", "--n_finetune", "0"], capsys)
    assert code == 2 and f"corpus folder '{target}' is in use by pid {holder.pid}" in err[-1]
    holder.kill()
    holder.wait()
    with exclusive(target, "corpus"):  # a lock left by a killed process is taken over, saying so
        pass
    assert "taking over corpus folder" in capsys.readouterr().err


def test_overwrite_replaces_only_what_it_is_for(corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain_main(tiny30(corpus_dir, run, max_steps=2, eval_points=0, checkpoint_points=0, save_steps=0))
    before = sorted(p.name for p in run.iterdir())
    build_argv = ["build", "--config", str(REPO / "recipes/demo/data.yaml"), "--n_individuals", "50", "--n_heldout",
                  "0", "--n_finetune", "0", "--overwrite", "true"]
    code, err = cli(data_main, [*build_argv, "--output_dir", str(run)], capsys)
    assert code == 2 and len(err) == 1 and "holds files that are not a corpus (attention.jsonl," in err[0]
    assert sorted(p.name for p in run.iterdir()) == before
    code, err = cli(pretrain_main, tiny30(corpus_dir, corpus_dir, overwrite_output_dir="true"), capsys)
    assert code == 2 and "holds files that are not a run of this pipeline (README.md," in err[0]
    assert (Path(corpus_dir) / "manifest.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(data_main, [*build_argv, "--output_dir", str(empty)], capsys)[0] == 0  # an empty folder is fine
    assert cli(data_main, [*build_argv, "--output_dir", str(empty), "--seed", "4"], capsys)[0] == 0  # a corpus too


def test_unwritable_paths_and_damaged_files_are_one_line(corpus_dir, tmp_path, capsys):
    long = tmp_path / ("x" * 300)
    code, err = cli(pretrain_main, tiny30(corpus_dir, long), capsys)
    assert code == 2 and len(err) == 1 and "cannot be written (File name too long)" in err[0]
    out = tmp_path / "run"
    pretrain_main(tiny30(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0, checkpoint_points=0))
    pretrain_main(tiny30(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0, checkpoint_points=0))  # done
    resume = RunFolder(out).latest_resume_checkpoint()
    (resume / "trainer_state.json").write_text('{"step": 2')
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0,
                                      checkpoint_points=0), capsys)
    assert code == 1 and len(err) == 1 and "is damaged (trainer_state.json is not JSON" in err[0]
    (resume / "trainer_state.json").write_text(json.dumps({"step": 10, "tokens_seen": 1, "recipe": {}}))
    weights = next(resume.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    code, err = cli(pretrain_main, tiny30(corpus_dir, out, max_steps=20, save_steps=10, eval_points=0,
                                      checkpoint_points=0), capsys)
    assert code == 1 and one_error_line(err) and f"resume checkpoint '{resume}' is damaged" in err[-1]
    # nothing rewound for a checkpoint that did not load
    assert max(r["step"] for r in RunFolder(out).trajectory()) == 20


def test_the_report_of_a_run_with_no_evaluation_is_one_line(corpus_dir, tmp_path, capsys):
    from pipeline.report.__main__ import main as report_main

    run = RunFolder(tmp_path / "run")
    run.start({"corpus": str(corpus_dir)})
    code, err = cli(report_main, ["--run", str(run.path)], capsys)
    assert code == 2 and err == [f"error: '{run / 'trajectory.jsonl'}' does not exist: point at the output_dir of a "
                                 f"run that has evaluated"]
    (run / "trajectory.jsonl").write_text("")
    code, err = cli(report_main, ["--run", str(run.path)], capsys)
    assert code == 2 and err == [f"error: '{run / 'trajectory.jsonl'}' holds no evaluation yet: wait for the run's "
                                 f"first evaluation (step 0), or rerun the run's command to resume it"]
    for damaged in ("", "corpus: [unclosed", "just a line"):  # emptied by a full disk, torn, or overwritten
        (run / "run_config.yaml").write_text(damaged)
        code, err = cli(report_main, ["--run", str(run.path)], capsys)
        assert code == 2 and len(err) == 1 and f"'{run / 'run_config.yaml'}' is empty or damaged" in err[0]


def _on_a_full_disk(tmp_path, before: str, command: list, size_kib: int, free_kib: int = 0) -> tuple[int, str, str]:
    """`command` run with a real, nearly full filesystem at tmp_path/full: a tmpfs of `size_kib` mounted in a mount
    namespace of its own (unshare), the shell lines `before` run there, then all but `free_kib` filled; returns the
    command's exit status, its stderr, and what `ls -AR` and `sha256sum` then see under tmp_path/full (the tmpfs
    goes with the namespace)."""
    full = tmp_path / "full"
    full.mkdir()
    script = (f"mount -t tmpfs -o size={size_kib}k tmpfs {full} || exit 99\n{before}\n"
              f"dd if=/dev/zero of={full}/reserve bs=1k count={free_kib} 2>/dev/null\n"
              f"dd if=/dev/zero of={full}/filler bs=1k 2>/dev/null; rm {full}/reserve; sync\n"
              f"{' '.join(map(str, command))} 2>{tmp_path}/stderr; echo \"status $?\"\n"
              f"cd {full} && ls -AR && find . -type f ! -name filler -exec sha256sum {{}} +")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True)
    if done.returncode == 99 or "status" not in done.stdout:
        pytest.skip(f"a full filesystem needs a tmpfs mounted in a user namespace (unshare -rm): {done.stderr[-200:]}")
    status, _, listing = done.stdout.partition("status ")[2].partition("\n")
    return int(status), (tmp_path / "stderr").read_text(), listing


def test_a_report_on_a_full_disk_is_one_line_and_keeps_every_file_that_was_there(corpus_dir, tmp_path):
    run = tmp_path / "run"
    pretrain_main(tiny30(corpus_dir, run))
    sums = subprocess.run("find . -type f -exec sha256sum {} +", shell=True, cwd=run, capture_output=True,
                          text=True).stdout.splitlines()
    status, err, listing = _on_a_full_disk(tmp_path, f"cp -a {run} {tmp_path}/full/run",
                                           [sys.executable, "-m", "pipeline.report", "--run", f"{tmp_path}/full/run"],
                                           size_kib=sum(f.stat().st_size for f in run.rglob("*")) // 1024 + 512)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1 and one_error_line(lines) and "no space left on the device" in lines[-1]
    assert "its previous version is kept" in lines[-1] and "Traceback" not in err
    assert ".tmp-" not in listing  # no temporary left
    assert sorted(line for line in listing.splitlines() if "  ./run/" in line) == sorted(
        line.replace("  ./", "  ./run/") for line in sums)  # every file as it was, none emptied


def test_a_corpus_build_on_a_full_disk_names_the_folder_and_the_space_it_needs(tmp_path):
    target = tmp_path / "full" / "corpus"
    status, err, listing = _on_a_full_disk(tmp_path, "", [
        sys.executable, "-m", "data_gen", "build", "--config", REPO / "recipes/demo/data.yaml", "--output_dir", target,
        "--n_individuals", "2000", "--n_heldout", "0", "--n_finetune", "0"], size_kib=256, free_kib=96)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 1 and one_error_line(lines) and "Traceback" not in err
    assert f"no space left on the device to write the corpus into '{target}': it needs about " in lines[-1]
    assert "MiB are free there" in lines[-1] and "nothing was written" in lines[-1]
    assert listing.split()[:3] == [".:", ".corpus.lock", "filler"]  # no corpus, no temporary folder (an empty lock)
