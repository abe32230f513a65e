"""Checkpoints in the tools users already have: TransformerLens and nnsight (the `interop` extra) give
the logits of AutoModelForCausalLM and the attention patterns pipeline.analyze measures; the corpus
tokenizer decodes the corpus's text exactly, and the stock text-generation pipeline reads right."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, pipeline

from data_gen import ATTRIBUTES
from data_gen.columns import as_list
from pipeline.analysis.circuits import analysis_batch, attention_patterns
from pipeline.model import load_eager
from pipeline.pretrain import main as pretrain_main
from pipeline.run_folder import RunFolder

from .conftest import tiny_flags


@pytest.fixture(scope="module")
def checkpoint(corpus_dir, tmp_path_factory):
    """A tiny model that has learned how values are distributed (after "lives in" comes a city)."""
    out = tmp_path_factory.mktemp("interop") / "run"
    pretrain_main(tiny_flags(corpus_dir, out, batch_size=32, learning_rate=1e-2, max_steps=150, eval_points=0,
                             checkpoint_points=0, save_steps=0, eval_individuals=10))
    return RunFolder(out).checkpoint(150)


def test_transformer_lens_gives_the_same_logits_and_attention_patterns(checkpoint, corpus):
    bridge_module = pytest.importorskip("transformer_lens.model_bridge", reason="the interop extra is not installed")
    bridge = bridge_module.TransformerBridge.boot_transformers(str(checkpoint), device="cpu",
                                                               tokenizer=corpus.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, attn_implementation="eager").eval()
    batch = analysis_batch(corpus, 8)
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"]).logits
        logits, cache = bridge.run_with_cache(batch["input_ids"])
    assert torch.allclose(logits, expected, atol=1e-5)
    ours = attention_patterns(load_eager(checkpoint), batch)  # what `pipeline.analyze attention` measures
    lengths = batch["attention_mask"].sum(dim=1)
    for layer, pattern in enumerate(ours):
        theirs = cache[f"blocks.{layer}.attn.hook_pattern"]
        for row, length in enumerate(lengths.tolist()):  # real positions: padding is after them, attention causal
            assert torch.allclose(theirs[row, :, :length, :length], pattern[row, :, :length, :length], atol=1e-6)


def test_nnsight_gives_the_same_logits_and_layer_outputs(checkpoint, corpus):
    nnsight = pytest.importorskip("nnsight", reason="the interop extra is not installed")
    model = nnsight.LanguageModel(str(checkpoint), tokenizer=corpus.tokenizer, dispatch=True)
    reference = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    input_ids = analysis_batch(corpus, 4)["input_ids"]
    with model.trace(input_ids):
        first_layer = model.model.layers[0].output.save()
        logits = model.output.logits.save()
    with torch.no_grad():
        expected = reference(input_ids=input_ids, output_hidden_states=True)
    assert torch.allclose(logits, expected.logits, atol=1e-6)
    first_layer = first_layer[0] if isinstance(first_layer, tuple) else first_layer
    assert torch.allclose(first_layer, expected.hidden_states[1], atol=1e-6)


def test_decode_gives_back_the_corpus_text(corpus):
    for split in ("eval_seen", "eval_heldout", "eval_finetune"):
        queries = corpus.split(split)
        assert corpus.tokenizer.batch_decode(as_list(queries, "input_ids")) == as_list(queries, "text")
    stream = corpus.stream(16, seed=0)  # biographies: the sentences rendered and joined by spaces
    columns = {c: as_list(corpus.split("train"), c) for c in ("name", *ATTRIBUTES)}
    who, order, template = stream.draw(2)
    batch = stream.batch(2)
    for row, (i, sentences, chosen) in enumerate(zip(who.tolist(), order.tolist(), template.tolist())):
        text = " ".join(corpus.template_texts[ATTRIBUTES[a]][chosen[a]].format(
            name=columns["name"][i], value=columns[ATTRIBUTES[a]][i]) for a in sentences)
        length = int(batch["attention_mask"][row].sum())
        assert corpus.tokenizer.decode(batch["input_ids"][row, : length - 1]) == text  # <bos> ... (no <eos>)


def test_the_text_generation_pipeline_reads_right(checkpoint, corpus):
    generator = pipeline("text-generation", model=str(checkpoint), device="cpu")
    person = corpus.split("train")[0]
    prompt = f"{person['name']} currently lives in"
    generated = generator(prompt, max_new_tokens=1, do_sample=False)[0]["generated_text"]
    ids = corpus.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_token = corpus.tokenizer.convert_ids_to_tokens(int(generator.model(ids).logits[0, -1].argmax()))
    assert next_token in set(as_list(corpus.split("train"), "current_location"))  # it has learned what comes after "in"
    assert generated == f"{prompt} {next_token}"  # "... lives in Puyang", not "... lives inPuyang"
