"""Synthetic biography corpora: build them (`python -m data_gen build`), load them, stream them."""

from common.errors import RecipeError

from .config import CorpusConfig
from .corpus import Corpus
from .resources import ATTRIBUTES
from .stream import BiographyStream

__all__ = ["ATTRIBUTES", "BiographyStream", "Corpus", "CorpusConfig", "RecipeError"]
