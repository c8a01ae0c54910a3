"""BERT's uncased tokenizer (basic split, then greedy longest-match WordPiece) from a ``vocab.txt``.

Follows ``transformers.BertTokenizer`` with ``do_lower_case=True``: control characters
dropped, whitespace normalized, CJK characters split apart, lower-cased with accents
stripped (NFD, combining marks removed), punctuation split off, then each word split into
the longest vocabulary pieces from the left (continuations prefixed ``##``); a word that
cannot be split, or longer than 100 characters, becomes ``[UNK]``.
"""

from __future__ import annotations

import unicodedata

import numpy as np

MAX_WORD = 100


def load_vocab(text: str) -> dict[str, int]:
    """``vocab.txt`` contents -> ``{token: id}`` (the id is the line number)."""
    return {line: i for i, line in enumerate(text.splitlines()) if line}


def basic_tokens(text: str) -> list[str]:
    """Lower-cased, accent-stripped words and single punctuation marks of ``text``."""
    cleaned = "".join(" " if _is_space(c) else c for c in text
                      if not (ord(c) in (0, 0xFFFD) or _is_control(c)))
    spaced = "".join(f" {c} " if _is_cjk(c) else c for c in cleaned)
    words = []
    for word in spaced.lower().split():
        word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        words.extend(_split_punctuation(word))
    return words


def wordpiece(word: str, vocab: dict[str, int], unk: str = "[UNK]") -> list[str]:
    """Greedy longest-match-first WordPiece split of one word."""
    if len(word) > MAX_WORD:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def encode(text: str, vocab: dict[str, int], length: int) -> dict[str, np.ndarray]:
    """``[CLS] pieces [SEP]`` padded / truncated to ``length``: int64 ``input_ids``,
    ``attention_mask`` and ``token_type_ids``, each ``(1, length)``."""
    pieces = [p for word in basic_tokens(text) for p in wordpiece(word, vocab)][:length - 2]
    ids = [vocab["[CLS]"], *(vocab[p] for p in pieces), vocab["[SEP]"]]
    out = np.zeros((1, length), np.int64)
    out[0, :len(ids)] = ids
    mask = (np.arange(length) < len(ids)).astype(np.int64)[None]
    return {"input_ids": out, "attention_mask": mask, "token_type_ids": np.zeros((1, length), np.int64)}


def _split_punctuation(word: str) -> list[str]:
    out, current = [], ""
    for c in word:
        if _is_punctuation(c):
            out += [current] if current else []
            out.append(c)
            current = ""
        else:
            current += c
    return out + ([current] if current else [])


def _is_space(c: str) -> bool:
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_control(c: str) -> bool:
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def _is_punctuation(c: str) -> bool:
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))
