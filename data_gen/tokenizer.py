"""A word-level tokenizer built from the corpus, in which every name part and value is one token."""

from __future__ import annotations

import re

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from common.errors import RecipeError

from .resources import Pools

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def with_decoder(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Decoding that reads like the corpus: every word token comes with the space before it, punctuation
    without, "'s" joined, and a text's <bos> takes the space after it away. So decode(ids) gives back a
    corpus text exactly, and a continuation decoded on its own (as the text-generation pipeline does)
    starts with its space: "... lives in" + " Puyang". (With skip_special_tokens=True the <bos> is
    removed before decoding, so a whole text then keeps a leading space.)"""
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.backend_tokenizer.decoder = decoders.Sequence([
        decoders.Replace(Regex(r"^(?![.,'])"), " "), decoders.Fuse(), decoders.Replace(f" {bos} ", ""),
        decoders.Replace("' s", "'s")])
    return tokenizer


def build_tokenizer(pools: Pools) -> PreTrainedTokenizerFast:
    """Template words form a word-level vocabulary; name parts and values are added tokens, matched
    whole before any splitting, so "New York" or "Procter & Gamble" is a single token."""
    texts = [re.sub(r"\{name\}|\{value\}", " ", t) for templates in pools.templates.values() for t in templates]
    tokenizer = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    entities = pools.tokens()
    clashes = sorted(set(tokenizer.get_vocab()) & set(entities))
    if clashes:
        raise RecipeError(f"template words {clashes[:5]} are also names or values: reword those templates")
    tokenizer.add_tokens([AddedToken(t, single_word=True, normalized=False) for t in entities])
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return with_decoder(PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS))
