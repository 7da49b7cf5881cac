"""Each sampled token's text, such that the texts join to the decoded response: rewards are placed
on the tokens whose text holds a verdict or an answer.

In one pass, O(length). Byte-level BPE tokenizers (Qwen2, Llama 3, the built-in task's) map every
token to its bytes once per tokenizer, and an incremental UTF-8 decoder gives a character split
over tokens to the token that completes it. Other tokenizers decode a short window per token (the
tokens since the last complete text, and one before it for context: a leading space or a split
character then comes out right).
"""

from __future__ import annotations

import codecs
import functools
from typing import Any, Sequence

REPLACEMENT = "\ufffd"  # what a decoder writes for bytes that are not (yet) a whole character


def token_pieces(tokenizer: Any, token_ids: Sequence[int]) -> list[str]:
    """Each token's text (special tokens: ""), joining to `tokenizer.decode(token_ids,
    skip_special_tokens=True)`."""
    token_ids = list(token_ids)
    whole = tokenizer.decode(token_ids, skip_special_tokens=True)
    table = _token_bytes(tokenizer)
    if table is not None:
        pieces = _byte_level_pieces(table, token_ids)
        if "".join(pieces) == whole:
            return pieces
    return _windowed_pieces(tokenizer, token_ids, whole)


def _byte_level_pieces(table: list[bytes], token_ids: list[int]) -> list[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(table[t]) if 0 <= t < len(table) else REPLACEMENT for t in token_ids]
    if pieces:
        pieces[-1] += decoder.decode(b"", final=True)
    return pieces


def _windowed_pieces(tokenizer: Any, token_ids: list[int], whole: str) -> list[str]:
    """Decodes `token_ids[context:i + 1]` for each i, where `context` is the token before the
    text written so far ends: the new text is what it adds to `token_ids[context:done]`; a
    window that ends inside a character (REPLACEMENT at its end) waits for the next token.
    Whatever the windows miss of `whole` at the end goes to the last token."""
    decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
    pieces, context, done, before = [], 0, 0, ""
    for i in range(len(token_ids)):
        after = decode(token_ids[context:i + 1])
        if len(after) > len(before) and after.startswith(before) and not after.endswith(REPLACEMENT):
            pieces.append(after[len(before):])
            context, done = done, i + 1
            before = decode(token_ids[context:done])  # the next windows' context, decoded once
        else:
            pieces.append("")
    written = "".join(pieces)
    if pieces and whole.startswith(written):
        pieces[-1] += whole[len(written):]
    return pieces


@functools.lru_cache(maxsize=8)
def _token_bytes(tokenizer: Any) -> list[bytes] | None:
    """Every token id's bytes, if `tokenizer` decodes byte-level (special tokens: none); None
    otherwise."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.decoder).__name__ != "ByteLevel":
        return None
    byte_of = {char: byte for byte, char in _byte_alphabet().items()}
    special = set(tokenizer.all_special_ids)
    added = {i: token.content for i, token in tokenizer.added_tokens_decoder.items()}
    table = []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if i in special or token is None:
            table.append(b"")
        elif i in added:
            table.append(added[i].encode("utf-8"))
        elif all(char in byte_of for char in token):
            table.append(bytes(byte_of[char] for char in token))
        else:
            return None
    return table


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte's printable stand-in (printable Latin-1 bytes stand
    for themselves, the others for the characters from U+0100 on, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in stand_ins]
    return {**stand_ins, **{byte: chr(256 + n) for n, byte in enumerate(others)}}
