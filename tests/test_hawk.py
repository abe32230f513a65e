"""The recurrent Hawk model (claim C3): RecurrentGemma with RG-LRU blocks only, trained, evaluated, resumed,
compiled, fine-tuned and checkpointed like the attention models; what needs attention, or would run its state
across biographies, refuses it in one line."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM
from transformers.models.recurrent_gemma.modeling_recurrent_gemma import RecurrentGemmaForCausalLM

from pipeline.analyze import main as analyze_main
from pipeline.config import ATTENTION_PACKAGES, ModelArguments
from pipeline.evaluation import Evaluator, pretraining_groups
from pipeline.finetune import main as finetune_main
from pipeline.model import build_model, count_parameters, has_attention, load_checkpoint
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder, checkpoint_name

from .conftest import cli, interrupted_run, one_error_line, record_losses, tiny30, tiny_flags

HAWK = {"model_type": "hawk"}
STEPS = 60


@pytest.fixture(scope="module")
def hawk_run(corpus_dir, tmp_path_factory):
    """A tiny Hawk pretrained for STEPS steps, and its logged training losses."""
    out = tmp_path_factory.mktemp("hawk") / "run"
    with pytest.MonkeyPatch.context() as patch:
        losses = record_losses(patch)
        pretrain_main(tiny_flags(corpus_dir, out, **HAWK, batch_size=32, learning_rate=1e-2, max_steps=STEPS,
                                 eval_points=1, checkpoint_points=1, save_steps=0, eval_individuals=20,
                                 logging_steps=5))
    return out, losses


def _final(run) -> object:
    return run / "checkpoints" / checkpoint_name(STEPS)


def test_a_tiny_hawk_learns_and_its_checkpoint_is_the_model_it_evaluated(hawk_run, corpus):
    run, losses = hawk_run
    assert losses[-1][1] < 0.7 * losses[0][1]  # (step, loss) every 5 steps: the loss falls
    model = AutoModelForCausalLM.from_pretrained(_final(run)).eval()
    assert isinstance(model, RecurrentGemmaForCausalLM) and model.config.block_types == ["recurrent"]
    assert not has_attention(model) and has_attention(build_model(ModelArguments(model_preset="tiny"), corpus.tokenizer))
    batch = torch.from_numpy(corpus.stream(8, 7).batch(0)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=batch).logits
        assert torch.equal(load_checkpoint(_final(run)).eval()(input_ids=batch).logits, logits)  # the stacked scan
        assert torch.equal(model.lm_head(model.model(input_ids=batch).last_hidden_state), logits)  # no soft cap
    final = {r["split"]: r for r in RunFolder(run).trajectory() if r["step"] == STEPS}
    metrics = Evaluator(corpus, pretraining_groups(corpus, 20), 512).evaluate(model, Accelerator(cpu=True))
    assert metrics["seen"]["attribute_loss"] == pytest.approx(final["seen"]["attribute_loss"], rel=1e-6)
    sizes = count_parameters(model)
    assert final["seen"]["non_embedding_parameters"] == sizes["non_embedding"]
    assert sizes["total"] - sizes["non_embedding"] == 2 * model.config.vocab_size * model.config.hidden_size


def test_the_report_says_in_one_line_that_hawk_has_no_attention(hawk_run):
    run, _ = hawk_run
    section = (run / "report.md").read_text().split("## Attention circuits")[1].split("##")[0]
    note = "None: this run trains a Hawk model, which has no attention (its blocks are RG-LRU recurrences)."
    assert section.strip().splitlines() == ["(over the checkpoints)", "", note]
    assert not (run / "attention.png").exists() and not (run / "attention.jsonl").exists()


def test_circuits_and_patching_refuse_hawk_in_one_line(hawk_run, corpus_dir, tmp_path, capsys):
    run, _ = hawk_run
    code, err = cli(analyze_main, ["attention", "--run", str(run)], capsys)
    assert code == 2 and one_error_line(err) and err[-1].endswith("is a Hawk model: it has no attention to measure "
                                                                  "circuits on")
    patched = tmp_path / "patched"
    code, err = cli(pretrain_main, tiny_flags(corpus_dir, patched, **HAWK, max_steps=2, reference_run=run,
                                              reference_checkpoint=STEPS), capsys)
    assert code == 2 and one_error_line(err) and err[-1].endswith("it has no attention to patch")
    assert not patched.exists()  # refused before anything is written


@pytest.mark.parametrize("flags, fix", [({"packing": "true"}, "set --packing false"),
                                        ({"attn_implementation": "flash_attention_2"}, "(sdpa)")])
def test_packing_and_flash_attention_are_refused_in_one_line(corpus_dir, tmp_path, capsys, monkeypatch, flags, fix):
    monkeypatch.setitem(ATTENTION_PACKAGES, "flash_attention_2", None)  # as where flash-attn is installed
    code, err = cli(pretrain_main, tiny_flags(corpus_dir, tmp_path / "run", **HAWK, max_steps=2, eval_points=0,
                                              eval_individuals=5, **flags), capsys)
    assert code == 2 and one_error_line(err) and "Hawk" in err[-1] and err[-1].endswith(fix)


def test_an_interrupted_hawk_run_resumes_to_the_same_trajectory(corpus_dir, tmp_path, monkeypatch):
    values = {**HAWK, "save_steps": 10}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    pretrain_main(tiny30(corpus_dir, straight, **values))
    interrupted_run(corpus_dir, resumed, 15, monkeypatch, **values)
    assert RunFolder(resumed).latest_resume_checkpoint().name == checkpoint_name(10)
    pretrain_main(tiny30(corpus_dir, resumed, **values))
    assert RunFolder(resumed).trajectory() == RunFolder(straight).trajectory()  # bit-identical on CPU, fp32
    a, b = (AutoModelForCausalLM.from_pretrained(r / "checkpoints" / checkpoint_name(30)).state_dict()
            for r in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_compiled_hawk_step_follows_the_eager_one(corpus_dir, tmp_path, monkeypatch):
    """aot_eager traces the graphs inductor would compile; fixed shapes give one graph (each new length would
    unroll the scan again). About 40 s: the compiled evaluation recompiles per query length."""
    losses = record_losses(monkeypatch)
    runs = {}
    for name, compiled in (("eager", {}), ("compiled", {"torch_compile": "true", "torch_compile_backend": "aot_eager"})):
        start = len(losses)
        pretrain_main(tiny_flags(corpus_dir, tmp_path / name, **HAWK, **compiled, fixed_length="true", max_steps=4,
                                 logging_steps=1, eval_points=0, checkpoint_points=0, save_steps=0,
                                 eval_individuals=5))
        runs[name] = [loss for _, loss in losses[start:]]
    assert runs["compiled"] == pytest.approx(runs["eager"], rel=1e-5) and len(runs["eager"]) == 4
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "compiled" / "checkpoints" / checkpoint_name(4))
    assert isinstance(model, RecurrentGemmaForCausalLM)


def _finetune(corpus_dir, run, out, **values) -> list[str]:
    return tiny_flags(corpus_dir, out, model_preset=None, init_from=_final(run), n_individuals_finetune=20,
                      learning_rate=3e-3, max_steps=5, eval_points=0, checkpoint_points=0, save_steps=0,
                      eval_individuals=10, **values)


@pytest.mark.parametrize("values, fixed, trained", [({"freeze": "mlp"}, (".mlp_block.",), (".temporal_block.",)),
                                                    ({"lora_rank": 4}, ("embed_tokens", "rg_lru", "conv_1d"),
                                                     (".linear_x.", ".linear_out.", ".mlp_block.down_proj."))])
def test_finetuning_a_hawk_checkpoint_freezes_its_mlps_or_adapts_its_projections(hawk_run, corpus_dir, tmp_path,
                                                                                 values, fixed, trained):
    run, _ = hawk_run
    out = tmp_path / "finetuned"
    finetune_main(_finetune(corpus_dir, run, out, **values))
    before = AutoModelForCausalLM.from_pretrained(_final(run)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / checkpoint_name(5)).state_dict()
    assert set(after) == set(before)  # a plain RecurrentGemma checkpoint (LoRA merged)
    assert all(torch.equal(before[k], after[k]) for k in before if any(part in k for part in fixed))
    for part in trained:
        assert not all(torch.equal(before[k], after[k]) for k in before if part in k), part
    assert (out / "report.md").is_file()


def test_freezing_attention_of_a_hawk_checkpoint_is_refused_in_one_line(hawk_run, corpus_dir, tmp_path, capsys):
    run, _ = hawk_run
    code, err = cli(finetune_main, _finetune(corpus_dir, run, tmp_path / "frozen", freeze="attention"), capsys)
    assert code == 2 and one_error_line(err) and err[-1].endswith("is a Hawk model: it has no attention to freeze")


def test_a_hawk_model_is_not_packed_by_default_where_an_attention_model_would_be():
    from pipeline.config import PerformanceArguments

    compiled = PerformanceArguments(torch_compile=True)  # a compiled sdpa run on a GPU packs its rows
    assert compiled.batching(on_gpu=True).packing and not compiled.batching(on_gpu=True, recurrent=True).packing
    assert PerformanceArguments(packing=True).batching(on_gpu=True, recurrent=True).packing  # asked: refused later
    assert not compiled.packs(on_gpu=True, recurrent=True)
