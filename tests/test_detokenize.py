"""Token texts that join to the decoded response, in one pass."""

import numpy as np
import pytest

from sv_jax.detokenize import _token_bytes, token_pieces
from tests.hf_fixtures import byte_level_bpe_tokenizer, word_level_tokenizer

TEXTS = ["12 + 3 = 15. Let me check: 15 - 3 = 12.", "½ · 計算 😀 café", "😀😀😀"]


@pytest.fixture(scope="module")
def byte_level():
    return byte_level_bpe_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_pieces_join_to_the_decoded_text(byte_level, text):
    ids = byte_level(text).input_ids + [byte_level.eos_token_id]
    pieces = token_pieces(byte_level, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == text and pieces[-1] == ""


def test_a_character_split_over_tokens_belongs_to_the_token_that_completes_it(byte_level):
    """The fixture's vocabulary has no merges for 😀: its four bytes are four tokens."""
    ids = byte_level("a😀").input_ids
    assert len(ids) == 5
    assert token_pieces(byte_level, ids) == ["a", "", "", "", "😀"]


def test_random_ids_still_join_to_the_decoded_text(byte_level):
    """Bytes that never form a character (decoded as U+FFFD) included."""
    ids = np.random.default_rng(0).integers(0, len(byte_level), 300).tolist()
    assert "".join(token_pieces(byte_level, ids)) == byte_level.decode(ids, skip_special_tokens=True)


def test_tokenizers_that_are_not_byte_level_decode_by_windows():
    tokenizer = word_level_tokenizer()
    assert _token_bytes(tokenizer) is None
    text = "the answer is 12 . check : 12 - 3 = 9"
    ids = tokenizer(text).input_ids + [tokenizer.eos_token_id]
    pieces = token_pieces(tokenizer, ids)
    whole = tokenizer.decode(ids, skip_special_tokens=True)
    assert len(pieces) == len(ids) and "".join(pieces) == whole and pieces[0] == "the" and pieces[-1] == ""
