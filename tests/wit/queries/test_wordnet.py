import shutil
import zipfile

import pytest

from wit.formats.errors import WitError
from wit.queries.wordnet import DATA_FILES, read_wordnet

WORDNET_30_SYNSETS = 117_659  # 82,115 nouns, 13,767 verbs, 18,156 adjectives, 3,621 adverbs
WORDNET_30_DISTINCT_HEAD_LEMMAS = 86_571  # lower-cased, underscores to spaces, markers dropped


def test_real_wordnet_all_synsets(wordnet_dir):
    wordnet = read_wordnet(str(wordnet_dir))
    assert wordnet.synsets == WORDNET_30_SYNSETS
    assert len(set(wordnet.lemmas)) == WORDNET_30_DISTINCT_HEAD_LEMMAS
    assert {"dog", "entity", "physical entity", "run", "able", "galore"} <= set(wordnet.lemmas)
    assert all(l == l.lower() and "_" not in l and not l.endswith(")") for l in wordnet.lemmas)


def test_head_lemma_counts_per_file_match_index_files(wordnet_dir):
    """Each data file has one line per synset: the index files' synset offsets agree."""
    wordnet = read_wordnet(str(wordnet_dir))
    offsets = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (wordnet_dir / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            fields = line.split()
            n_pointers = int(fields[3])
            offsets.update((pos, o) for o in fields[6 + n_pointers:])
    assert len(offsets) == wordnet.synsets


def test_nltk_data_layouts(tmp_path, wordnet_dir):
    plain = tmp_path / "nltk_data" / "corpora" / "wordnet"
    plain.mkdir(parents=True)
    for name in DATA_FILES:
        shutil.copy(wordnet_dir / name, plain / name)
    assert read_wordnet(str(tmp_path / "nltk_data")).synsets == WORDNET_30_SYNSETS

    zipped = tmp_path / "zipped" / "corpora"
    zipped.mkdir(parents=True)
    with zipfile.ZipFile(zipped / "wordnet.zip", "w") as z:
        for name in DATA_FILES:
            z.write(wordnet_dir / name, f"wordnet/{name}")
    assert read_wordnet(str(tmp_path / "zipped")).synsets == WORDNET_30_SYNSETS


def test_adjective_markers_and_underscores(tmp_path):
    header = "  1 This software and database is being provided\n"
    lines = {
        "data.noun": "00001740 03 n 02 physical_entity 0 thing 0 000 | x\n",
        "data.verb": "00001741 29 v 01 Run_Away 0 000 | x\n",
        "data.adj": "00001742 00 a 01 galore(ip) 0 000 | x\n",
        "data.adv": "00001743 02 r 01 well 0 000 | x\n",
    }
    for name, line in lines.items():
        (tmp_path / name).write_text(header + line)
    assert read_wordnet(str(tmp_path)).lemmas == ["physical entity", "run away", "galore", "well"]


def test_unreadable_wordnet_directories(tmp_path):
    with pytest.raises(WitError, match="does not exist"):
        read_wordnet(str(tmp_path / "missing"))
    with pytest.raises(WitError, match=f"{tmp_path}: not a WordNet database"):
        read_wordnet(str(tmp_path))
    for name in DATA_FILES:
        (tmp_path / name).write_text("garbage line\n")
    with pytest.raises(WitError, match="data.noun: line 1 is not a WordNet data line"):
        read_wordnet(str(tmp_path))
