"""The options the paper recipes set (torch.compile, bf16, fixed shapes, prefetching) and LoRA and two gloo
processes, on the CPU: every run finishes, its checkpoints load as the live model (every key, the same
logits), its losses follow the eager fp32 run's; the compiled step is one graph, with no break and no
recompile, calling SDPA's causal kernel with no mask.

Compiled runs here use the `aot_eager` backend: it traces the same graphs as inductor (forward, backward and
their breaks) without generating code, whose compile time is the only difference on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch._dynamo.utils import counters
from torch.nn.attention.flex_attention import flex_attention
from transformers import AutoModelForCausalLM

from common.errors import RunError
from pipeline.config import ModelArguments, PerformanceArguments
from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.finetune import main as finetune_main
from pipeline.model import build_model, check_model_keys, document_block_mask, model_keys
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder, checkpoint_name
from pipeline.train import loop, stage
from pipeline.train.loader import packed_length

from .conftest import record_losses, tiny_flags

STEPS = 12
RUN = dict(max_steps=STEPS, learning_rate=3e-3, logging_steps=1, eval_points=2, checkpoint_points=1, save_steps=6,
           eval_individuals=20)
COMPILE = dict(torch_compile="true", torch_compile_backend="aot_eager")
BF16 = dict(mixed_precision="bf16")
PACKED = dict(packing="true")
PAPER = dict(**COMPILE, **BF16, **PACKED, fixed_length="true", prefetch_batches=2)  # a GPU's defaults
# name: (flags, relative tolerance of the training losses against the eager fp32 run's)
OPTIONS = {
    "compiled": (COMPILE, 1e-5),
    "fixed length": (dict(fixed_length="true"), 1e-5),
    "packed": (PACKED, 1e-5),
    "packed, fixed length, compiled": (dict(**PACKED, **COMPILE, fixed_length="true"), 1e-5),
    "prefetch": (dict(prefetch_batches=2), 1e-6),
    "bf16": (BF16, 2e-2),
    "paper path": (PAPER, 2e-2),
}


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each run sets its own mixed precision (Accelerate keeps one state per process)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def trainers(monkeypatch) -> list[loop.TrainingLoop]:
    """Every TrainingLoop a stage builds from now on, kept for its live model."""
    made = []

    class Kept(loop.TrainingLoop):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(stage, "TrainingLoop", Kept)
    return made


def _inputs(corpus) -> torch.Tensor:
    return torch.from_numpy(corpus.stream(8, seed=123).batch(0, marks=False)["input_ids"])


def assert_checkpoint_is_the_live_model(checkpoint, live_trainer, corpus, bf16: bool) -> None:
    """`from_pretrained` finds every key of the class and nothing else, and gives the live model's logits
    (computed as in training: under bf16 autocast for bf16 runs) to 1e-5 (fp32) or 1e-2 (bf16) of their scale."""
    saved, info = AutoModelForCausalLM.from_pretrained(checkpoint, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched key
    live = live_trainer.accelerator.unwrap_model(live_trainer.model, keep_fp32_wrapper=False,
                                                 keep_torch_compile=False)
    device = next(live.parameters()).device
    ids = _inputs(corpus).to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        expected = live.eval()(ids).logits.float()
    with torch.no_grad():
        got = saved.to(device).eval()(ids).logits
    assert (got - expected).abs().max() <= (1e-2 if bf16 else 1e-5) * expected.abs().max()


@pytest.fixture(scope="module")
def eager(corpus_dir, tmp_path_factory):
    """The eager fp32 run every option is compared with: its losses and folder."""
    out = tmp_path_factory.mktemp("eager") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        losses = record_losses(monkeypatch)
        pretrain_main(tiny_flags(corpus_dir, out, **RUN))
    return losses, out


def _assert_losses_follow(losses, reference, tolerance: float) -> None:
    assert [step for step, _ in losses] == [step for step, _ in reference] == list(range(1, STEPS + 1))
    for (step, loss), (_, expected) in zip(losses, reference, strict=True):
        assert loss == pytest.approx(expected, rel=tolerance), f"step {step}"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_paper_option_trains_the_same_model_and_saves_it(name, eager, corpus, corpus_dir, tmp_path, trainers,
                                                             monkeypatch):
    flags, tolerance = OPTIONS[name]
    losses = record_losses(monkeypatch)
    out = tmp_path / "run"
    pretrain_main(tiny_flags(corpus_dir, out, **RUN, **flags))
    _assert_losses_follow(losses, eager[0], tolerance)
    assert_checkpoint_is_the_live_model(out / "checkpoints" / checkpoint_name(STEPS), trainers[-1], corpus,
                                        bf16="mixed_precision" in flags)


@pytest.mark.slow
def test_a_compiled_run_saves_checkpoints_that_load_as_the_model(corpus, corpus_dir, tmp_path, trainers):
    """The issue's reproduction: compiled checkpoints used to hold `_orig_mod.` keys, loaded as random weights."""
    out = tmp_path / "run"
    pretrain_main(tiny_flags(corpus_dir, out, **{**RUN, "max_steps": 4, "save_steps": 0, "eval_points": 0},
                             **COMPILE))
    assert_checkpoint_is_the_live_model(out / "checkpoints" / checkpoint_name(4), trainers[-1], corpus, False)
    keys = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / checkpoint_name(0)).state_dict()
    assert keys and not any(key.startswith("_orig_mod.") for key in keys)


@pytest.mark.slow
def test_compiled_packed_lora_checkpoints_are_the_merged_live_model(eager, corpus, corpus_dir, tmp_path, trainers,
                                                            monkeypatch):
    init = eager[1] / "checkpoints" / checkpoint_name(STEPS)
    runs, losses = {}, record_losses(monkeypatch)
    for name, flags in (("eager", {}), ("compiled, packed", {**COMPILE, **PACKED})):  # a GPU's default
        out = tmp_path / name
        finetune_main(tiny_flags(corpus_dir, out, model_preset=None, init_from=init, n_individuals_finetune=20,
                                 lora_rank=4, **{**RUN, "max_steps": 6, "save_steps": 0}, **flags))
        runs[name] = losses[:]
        losses.clear()
        assert_checkpoint_is_the_live_model(out / "checkpoints" / checkpoint_name(6), trainers[-1], corpus, False)
    assert [s for s, _ in runs["compiled, packed"]] == [s for s, _ in runs["eager"]]
    for (_, loss), (_, expected) in zip(runs["compiled, packed"], runs["eager"], strict=True):
        assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_two_compiled_gloo_processes_save_the_model_they_evaluated(eager, corpus, corpus_dir, tmp_path):
    out = tmp_path / "two"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                             "pipeline.pretrain", *tiny_flags(corpus_dir, out, **RUN, **COMPILE)],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    trajectory, reference = RunFolder(out).trajectory(), RunFolder(eager[1]).trajectory()
    assert [(r["step"], r["split"]) for r in trajectory] == [(r["step"], r["split"]) for r in reference]
    for got, expected in zip(trajectory, reference, strict=True):
        assert got["attribute_loss"] == pytest.approx(expected["attribute_loss"], rel=1e-4)
    model, info = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / checkpoint_name(STEPS),
                                                       output_loading_info=True)
    assert not any(info.values()), info
    metrics = Evaluator(corpus, pretraining_groups(corpus, 20), 1024).evaluate(model, Accelerator(cpu=True))
    final = {r["split"]: r for r in trajectory if r["step"] == STEPS}
    assert metrics["seen"]["attribute_loss"] == pytest.approx(final["seen"]["attribute_loss"], rel=1e-5)


@pytest.mark.parametrize("packing", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_the_compiled_step_is_one_graph_with_a_fused_kernel_and_no_mask(packing, corpus, corpus_dir, tmp_path,
                                                                        monkeypatch, trainers):
    """Over a fixed-shape run: one graph, no graph break, no recompile. In it, for rows of one biography,
    every layer calls SDPA with `is_causal` and no mask, and no tensor of a [B, 1, T, T] mask's shape exists
    (packed rows on a GPU: test_a_packed_compiled_gpu_step...). Its last checkpoint is the live model."""
    graphs = []

    def recorder(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(loop, "compile_options", lambda args: {"backend": recorder})
    torch._dynamo.reset()
    counters.clear()
    out = tmp_path / "run"
    pretrain_main(tiny_flags(corpus_dir, out, **{**RUN, "max_steps": 6, "save_steps": 0, "eval_points": 0},
                             **COMPILE, fixed_length="true", packing=str(packing).lower()))
    assert_checkpoint_is_the_live_model(out / "checkpoints" / checkpoint_name(6), trainers[-1], corpus, False)
    assert len(graphs) == 1, f"{len(graphs)} graphs: recompiled or broken"
    assert not counters["graph_break"], dict(counters["graph_break"])
    nodes = list(graphs[0].graph.nodes)
    sdpa = [n for n in nodes if n.target in (torch._C._nn.scaled_dot_product_attention,
                                             torch.nn.functional.scaled_dot_product_attention)]
    assert len(sdpa) == 2  # the tiny model's two layers
    for call in sdpa:  # packed rows on a CPU, where FlexAttention has no backward: the block mask made dense
        assert call.kwargs.get("is_causal") is not packing and (call.kwargs.get("attn_mask") is None) is not packing
    ids = next(n for n in nodes if n.op == "placeholder" and "input_ids" in n.name)
    batch, length = ids.meta["example_value"].shape
    assert batch == (1 if packing else 16)  # packed: the 16 biographies in one row
    shapes = [tuple(n.meta["example_value"].shape) for n in nodes
              if isinstance(n.meta.get("example_value"), torch.Tensor)]
    assert packing or (batch, 1, length, length) not in shapes


def test_the_block_mask_of_packed_rows_keeps_attention_within_each_biography(corpus):
    """FlexAttention over `document_block_mask` (forward: FlexAttention on a CPU has no backward) equals causal
    SDPA on each biography alone; the block mask lists every block a biography needs, and few others."""
    packed = corpus.stream(24, seed=1).packed(0, pad_to_multiple_of=8)
    documents = torch.from_numpy(packed["document_ids"])
    length = documents.shape[1]
    query, key, value = torch.randn(3, 1, 2, length, 16).unbind(0)
    got = flex_attention(query, key, value, block_mask=document_block_mask(documents))
    for k in range(int(documents.max()) + 1):
        span = (documents[0] == k).nonzero()[:, 0]
        start, stop = int(span[0]), int(span[-1]) + 1
        alone = torch.nn.functional.scaled_dot_product_attention(query[..., start:stop, :], key[..., start:stop, :],
                                                                 value[..., start:stop, :], is_causal=True)
        torch.testing.assert_close(got[..., start:stop, :], alone, atol=1e-5, rtol=1e-5)
    counts = document_block_mask(documents).kv_num_blocks[0, 0]
    assert (counts <= 2).all() and (counts >= 1).all()  # biographies of about 60 tokens: a block or two back


def test_packed_rows_waste_at_most_a_tenth_of_the_positions(corpus):
    """At the paper's batch of 128, a run's packed rows (one shape: the largest micro-batch) against rows
    padded to the longest biography, the fixed shape of unpacked runs."""
    stream = corpus.stream(128, seed=0)
    real = sum(int(stream.lengths(step).sum()) for step in range(200))
    packed = 200 * packed_length(stream, 200, 0, 1, 1, 8)
    padded = 200 * 128 * stream.max_length
    assert 1 - real / packed <= 0.10 < 1 - real / padded


@pytest.mark.gpu
def test_a_packed_compiled_gpu_step_is_one_graph_calling_flex_attention(corpus, corpus_dir, tmp_path, monkeypatch,
                                                                        trainers):
    """The GPU default (inductor, bf16, fixed shapes, packed rows): one graph, no break, each layer's attention
    through FlexAttention's fused kernel with the block mask, no SDPA; the checkpoint is the live model."""
    from torch._inductor.compile_fx import compile_fx

    graphs = []

    def recorder(graph_module, example_inputs):
        graphs.append(graph_module)
        return compile_fx(graph_module, example_inputs)

    monkeypatch.setattr(loop, "compile_options", lambda args: {"backend": recorder})
    torch._dynamo.reset()
    counters.clear()
    out = tmp_path / "run"
    pretrain_main(tiny_flags(corpus_dir, out, **{**RUN, "max_steps": 6, "save_steps": 0, "eval_points": 0},
                             torch_compile="true", mixed_precision="bf16"))
    assert trainers[-1].loader.pack and len(graphs) == 1 and not counters["graph_break"]
    targets = [str(n.target) for n in graphs[0].graph.nodes]
    assert sum("flex_attention" in t for t in targets) == 2 and not any("scaled_dot_product" in t for t in targets)
    assert_checkpoint_is_the_live_model(out / "checkpoints" / checkpoint_name(6), trainers[-1], corpus, bf16=True)


def test_the_fused_attention_decodes_with_a_cache_as_stock_sdpa_does(corpus):
    torch.manual_seed(0)
    model = build_model(ModelArguments(model_preset="tiny"), corpus.tokenizer).eval()
    prompt = _inputs(corpus)[:2, :20]
    fused = model.generate(prompt, max_new_tokens=6, do_sample=False)
    model.set_attn_implementation("sdpa")
    assert torch.equal(fused, model.generate(prompt, max_new_tokens=6, do_sample=False))


def test_a_checkpoint_whose_keys_are_not_the_models_is_refused(corpus, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelArguments(model_preset="tiny"), corpus.tokenizer)
    expected, weights = model_keys(model), model.state_dict()
    assert expected == set(weights)
    check_model_keys(expected, weights, tmp_path / "step-1", "LlamaForCausalLM")  # the model's own: written
    for wrong in ({f"_orig_mod.{k}": v for k, v in weights.items()},  # a compile wrapper's
                  {k: v for k, v in weights.items() if k != "lm_head.weight"}):
        with pytest.raises(RunError, match="step-1 was not written"):
            check_model_keys(expected, wrong, tmp_path / "step-1", "LlamaForCausalLM")


@pytest.mark.parametrize("flags, on_gpu, packs", [
    ({}, True, False), ({"torch_compile": True}, False, False), ({"torch_compile": True}, True, True),
    ({"torch_compile": True, "attn_implementation": "eager"}, True, False),  # eager attention crosses biographies
    ({"packing": True}, False, True), ({"packing": False, "torch_compile": True}, True, False)])
def test_rows_are_packed_by_default_only_where_flex_attention_is_fused(flags, on_gpu, packs):
    assert PerformanceArguments(**flags).packs(on_gpu) is packs
