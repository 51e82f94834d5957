"""Words -> BERT word-piece ids, from a plain ``vocab.txt`` (one token a line, id = line number).

The feature releases of MAG/MIB (pickles) and of the CMU-MultimodalSDK (``.csd``) store the
transcript as words; a ``tokens`` modality needs ids. The authors tokenise each word with the
uncased BERT tokenizer (lower-casing, accent stripping, punctuation split, greedy longest-match
word pieces) and frame the sentence as ``[CLS] pieces [SEP] [PAD]...``. :class:`WordPieces`
does the same with the ``tokenizers`` library (a dependency of ``transformers``); the vocabulary
is read as text, so nothing in it can run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from composer.errors import DataError

__all__ = ["WordPieces", "read_vocab"]

MAX_VOCAB_BYTES = 16 * 2**20
MAX_VOCAB_TOKENS = 1_000_000
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def read_vocab(path: str | Path) -> dict[str, int]:
    """``token -> id`` of a BERT ``vocab.txt``; refuses missing, oversized or incomplete files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"vocabulary not found: {path} (training.data.vocab: the vocab.txt of the BERT the text encoder uses)")
    if path.stat().st_size > MAX_VOCAB_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes; a vocab.txt is at most {MAX_VOCAB_BYTES} bytes")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); expected one token a line") from None
    if len(lines) > MAX_VOCAB_TOKENS:
        raise DataError(f"{path}: {len(lines)} tokens, more than {MAX_VOCAB_TOKENS}")
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        vocab.setdefault(line.strip(), i)
    missing = [t for t in SPECIAL if t not in vocab]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} token; expected a BERT vocab.txt with {', '.join(SPECIAL)}")
    return vocab


class WordPieces:
    """Uncased BERT word pieces over ``vocab``; ``frame`` builds one ``[CLS] ... [SEP]`` row."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        vocab = read_vocab(path)
        self.path = str(path)
        self.size = max(vocab.values()) + 1
        self.pad, self.cls, self.sep = vocab["[PAD]"], vocab["[CLS]"], vocab["[SEP]"]
        self._tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        self._tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        self._tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def pieces(self, words: Sequence[str], limit: int) -> tuple[list[int], list[int]]:
        """Ids of the first ``limit`` pieces and, for each, the index of its word (the authors'
        "inversions"); words are tokenised one at a time until ``limit`` pieces are reached."""
        ids: list[int] = []
        owner: list[int] = []
        for w, word in enumerate(words):
            if len(ids) >= limit:
                break
            got = self._tok.encode(str(word), add_special_tokens=False).ids
            ids.extend(got)
            owner.extend([w] * len(got))
        return ids[:limit], owner[:limit]

    def frame(self, words: Sequence[str], length: int) -> tuple[list[int], list[int], int]:
        """``[CLS] pieces [SEP]`` padded with ``[PAD]`` to ``length`` (pieces cut to ``length - 2``),
        the word index of each step (``-1`` at ``[CLS]``, ``[SEP]`` and padding) and the number of
        valid steps (pieces + 2)."""
        if length < 3:
            raise DataError(f"a token modality needs a length of at least 3 ([CLS], one word piece, [SEP]), got {length}")
        ids, owner = self.pieces(words, length - 2)
        pad = length - len(ids) - 2
        return [self.cls, *ids, self.sep] + [self.pad] * pad, [-1, *owner, -1] + [-1] * pad, len(ids) + 2
