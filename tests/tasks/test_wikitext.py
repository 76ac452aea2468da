"""WikiText on small files in the release format: words + <eos> per line, frequency-sorted
vocabulary, the raw layout, and one clear error without files or hub."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from surnn.errors import DataError
from tasks.formats import write_wikitext
from tasks.wikitext import EOS, WikiText2, WikiText103


def _words(lines):
    return [w for line in lines for w in [*line.split(), EOS]]


def test_reads_the_release_files_word_level_with_eos(tmp_path):
    lines = write_wikitext(tmp_path, "wikitext-2", articles={"train": 3, "valid": 1, "test": 1})
    t = WikiText2(tmp_path, max_len=16, hub=False)
    s = t.splits()
    train = _words(lines["train"])
    counts = Counter(train)
    vocab = t.vocab
    assert sorted(vocab) == sorted(counts) and t.n_classes == len(vocab)
    assert t.vocab_size == len(vocab) + 1 and t.objective == "lm"
    c = [counts[w] for w in vocab]
    assert c == sorted(c, reverse=True)  # ids by frequency (adaptive softmax clusters)
    assert vocab[0] in (EOS, "the")
    decoded = [vocab[i - 1] for i in np.asarray(s.train.tokens)]
    assert decoded == train
    assert [vocab[i - 1] for i in np.asarray(s.test.tokens)] == _words(lines["test"])
    assert s.train.stream and len(s.val) == len(_words(lines["valid"]))
    d = t.describe()
    assert "release files" in d["source"] and d["tokens"]["train"] == len(train)
    assert d["oov"] == {"train": 0, "val": 0, "test": 0}
    # cutoffs beyond the small vocabulary are dropped: a plain softmax here
    assert t.adaptive_cutoffs == []


def test_raw_layout_and_cache_reuse(tmp_path):
    write_wikitext(tmp_path, "wikitext-103", raw=True)
    t = WikiText103(tmp_path, max_len=8, adaptive_cutoffs=[5, 10], hub=False)
    s = t.splits()
    assert "wikitext-103-raw" in t.describe()["source"]
    assert "<unk>" not in t.vocab and t.adaptive_cutoffs == [5, 10]
    again = WikiText103(tmp_path, max_len=8, hub=False).splits()
    assert np.array_equal(np.asarray(again.train.tokens), np.asarray(s.train.tokens))


def test_no_files_and_no_hub_is_one_line_naming_the_source(tmp_path):
    with pytest.raises(DataError) as e:
        WikiText103(tmp_path, hub=False).splits()
    msg = str(e.value)
    assert "\n" not in msg
    assert "wikitext-103/wiki.{train,valid,test}.tokens" in msg
    assert "wikitext-103-v1.zip" in msg and "hub: false" in msg
