"""tools/corpora.py: the tuning set's registry, the novel checked by its sha256, and one-line refusals (the
Debian packages themselves are not downloaded here: that needs the network)."""
from __future__ import annotations

import hashlib

import pytest

from smallgpt.errors import UserError
from tools import corpora


def test_the_registry_holds_a_tuning_set_of_kinds_and_a_held_out_set():
    assert len(corpora.TUNING) >= 4 and len(corpora.HELD_OUT) >= 1
    assert not set(corpora.TUNING) & set(corpora.HELD_OUT)
    assert len({c.kind for c in corpora.CORPORA.values()}) == len(corpora.CORPORA)  # each of another kind
    for c in corpora.CORPORA.values():
        assert 500_000 <= c.bytes <= 5_000_000 and len(c.sha256) == 64 and c.description
        assert c.from_user_file or all(p.version for p in c.packages)  # pinned: the same bytes everywhere


def test_the_novel_is_copied_from_the_users_file_and_checked(tmp_path, shared_data):
    path = corpora.build("novel", tmp_path / "out", tmp_path / "debs", novel=shared_data / "pride-and-prejudice.txt")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == corpora.CORPORA["novel"].sha256
    other = tmp_path / "other.txt"
    other.write_text("not the novel\n")
    with pytest.raises(UserError, match="sha256") as e:
        corpora.build("novel", tmp_path / "out2", tmp_path / "debs", novel=other)
    assert "\n" not in str(e.value) and not (tmp_path / "out2" / "novel.txt").exists()


def test_mistakes_are_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown corpus 'nope'"):
        corpora.build("nope", tmp_path, tmp_path)
    with pytest.raises(UserError, match="corpora.novel"):
        corpora.main(["--corpora.names=novel", f"--corpora.out_dir={tmp_path}"])
