"""The cluster path for real. A two-node Slurm cluster on this host (tests/slurm_cluster.py) runs
recipes/launch.slurm across both nodes, a study as an array job and a requeued run; two accelerate launchers
on one host make a two-machine run. Each gives what one process gives."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.pretrain import main
from pipeline.run_folder import SUMMARY, RunFolder
from pipeline.sweep import main as sweep_main

from .conftest import REPO, tiny_flags
from .slurm_cluster import SlurmCluster, free_port, unavailable

pytestmark = pytest.mark.slow
CONFIGS = REPO / "recipes" / "accelerate_configs"
JOB_ENV = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
RECIPE = str(REPO / "recipes" / "demo" / "pretrain.yaml")  # a shipped recipe, its sizes overridden by _flags
TIMING = ("wall", "seconds", "ms_per_step", "tokens_per_s", "mfu", "started_at")  # columns that time the machine


def _flags(corpus_dir, output_dir, max_steps: int, **values) -> list[str]:
    return ["--config", RECIPE, *tiny_flags(corpus_dir, output_dir, learning_rate=3e-3, eval_points=4, eval_steps=10,
                                            checkpoint_points=2, eval_individuals=30, max_steps=max_steps, **values)]


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _same_trajectory(one: Path, two: Path) -> None:
    a, b = RunFolder(one).trajectory(), RunFolder(two).trajectory()
    assert [(r["step"], r["split"], r["tokens"]) for r in a] == [(r["step"], r["split"], r["tokens"]) for r in b]
    for x, y in zip(a, b, strict=True):
        assert y["attribute_loss"] == pytest.approx(x["attribute_loss"], rel=1e-4)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


def _launch(slurm: SlurmCluster, nodes: int, log: Path, flags: list[str]) -> str:
    """sbatch recipes/launch.slurm of a pretraining run on `nodes` CPU nodes, fp32."""
    return slurm.submit([f"--nodes={nodes}", f"--output={log}", f"--chdir={REPO}", "recipes/launch.slurm",
                         "--stage", "pretrain", "--gpus_per_node", "0", "--mixed_precision", "no", *flags], env=JOB_ENV)


@pytest.mark.slurm
def test_a_two_node_slurm_run_matches_one_process(slurm, corpus_dir, tmp_path):
    main(_flags(corpus_dir, tmp_path / "one", 20))
    log = tmp_path / "two.out"
    job = _launch(slurm, 2, log, _flags(corpus_dir, tmp_path / "two", 20))
    assert slurm.wait(job) == ["COMPLETED"], log.read_text()[-3000:]
    assert "x 2 processes" in log.read_text()  # one per node
    _same_trajectory(tmp_path / "one", tmp_path / "two")


@pytest.mark.slurm
def test_a_study_as_a_slurm_array_gives_the_local_summary(slurm, corpus_dir, tmp_path):
    def study(name: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "base": RECIPE, "output_dir": str(tmp_path / name),
            "fixed": {"corpus": str(corpus_dir), "model_preset": "tiny", "batch_size": 16, "max_steps": 20,
                      "eval_points": 4, "eval_steps": 0, "eval_individuals": 30, "checkpoint_points": 2,
                      "report_to": "none"},
            "grid": {"seed": [0, 1]}}))
        return path

    sweep_main(["--config", str(study("local"))])
    script = tmp_path / "array.sbatch"
    sweep_main(["--config", str(study("array")), "--slurm_array", str(script), "--gpus_per_task", "0"])
    assert "--gres" not in script.read_text()
    job = slurm.submit([f"--chdir={REPO}", str(script)], env=JOB_ENV)
    assert slurm.wait(job) == ["COMPLETED", "COMPLETED"]
    sweep_main(["--config", str(study("array")), "--aggregate_only"])
    local, array = ([{k: _number(v) for k, v in row.items() if not any(t in k for t in TIMING)}
                     for row in csv.DictReader((tmp_path / name / SUMMARY).open())] for name in ("local", "array"))
    # the array's tasks run on one thread, the local pool on the machine's share: sums in another order
    assert len(local) == len(array) == 2 and "final_loss" in local[0]
    for a, b in zip(local, array, strict=True):
        assert a.keys() == b.keys()
        assert {k: v for k, v in b.items() if isinstance(v, str)} == {k: v for k, v in a.items() if isinstance(v, str)}
        assert {k: v for k, v in b.items() if isinstance(v, float)} == pytest.approx(
            {k: v for k, v in a.items() if isinstance(v, float)}, rel=1e-6, nan_ok=True)


@pytest.mark.slurm
def test_a_requeued_slurm_run_resumes_to_the_uninterrupted_trajectory(slurm, corpus_dir, tmp_path):
    main(_flags(corpus_dir, tmp_path / "straight", 80, save_steps=20))
    requeued, log = tmp_path / "requeued", tmp_path / "requeued.out"
    job = _launch(slurm, 1, log, _flags(corpus_dir, requeued, 80, save_steps=20))
    deadline = time.time() + 300
    while RunFolder(requeued).latest_resume_checkpoint() is None:  # past step 20
        assert time.time() < deadline and slurm.states(job) != ["COMPLETED"], log.read_text()[-3000:]
        time.sleep(0.1)
    slurm.run(["scontrol", "requeue", job])
    assert slurm.wait(job) == ["COMPLETED"], log.read_text()[-3000:]
    assert slurm.job(job)["Restarts"] == "1"
    text = log.read_text()  # both runs of the job, appended
    assert "stopped by SIGTERM after step" in text and "resuming" in text, text[-3000:]
    _same_trajectory(tmp_path / "straight", requeued)


@pytest.mark.parametrize("config", ["ddp", pytest.param("zero2", marks=pytest.mark.gpu)])
def test_two_launchers_on_one_host_match_one_process(corpus_dir, tmp_path, config):
    """DDP over gloo on CPUs (ACCELERATE_USE_CPU=1 makes Accelerate form the group). DeepSpeed needs two GPUs:
    on CPUs Accelerate 1.15 forms no DeepSpeed group across processes (each believes it is the main one), and
    with ACCELERATE_USE_CPU=1 it runs plain DDP instead, which the checkpoint layout below would catch."""
    if config == "zero2" and (importlib.util.find_spec("deepspeed") is None or torch.cuda.device_count() < 2):
        pytest.skip("needs deepspeed and two CUDA devices")
    main(_flags(corpus_dir, tmp_path / "one", 20))
    port = free_port()
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{config}.yaml"),
         "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip",
         "127.0.0.1", "--main_process_port", str(port), "--mixed_precision", "no",
         "--deepspeed_multinode_launcher", "standard", "-m", "pipeline.pretrain",
         *_flags(corpus_dir, tmp_path / "two", 20)],
        env={**os.environ, **JOB_ENV, **({} if config == "zero2" else {"ACCELERATE_USE_CPU": "1"})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "x 2 processes" in outputs[0] + outputs[1]
    resume = RunFolder(tmp_path / "two").latest_resume_checkpoint()
    assert any(resume.rglob("*optim_states.pt")) == (config == "zero2")  # DeepSpeed's own checkpoint layout
    _same_trajectory(tmp_path / "one", tmp_path / "two")
