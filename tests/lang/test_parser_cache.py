"""The PxL parser's cache (Lark's cache of the grammar analysis, pxq.lang.parse.parser_cache_dir):
a parser loaded from it parses as one Lark builds from the grammar, a damaged cache file is
rebuilt, a cache that someone else could have written is never loaded (it is a pickle), and
writing a new cache file removes other versions' stale files and nothing else."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
from lark import Lark

from pxq.lang.parse import CACHE_DIR_ENV, PxlIndenter, new_parser, parser_cache_dir, prune_parser_cache
from pxq.resources import data_dir

CORPUS = sorted((Path(__file__).parent / "corpus").glob("*.pxl"))
SCRIPTS = sorted(data_dir("scripts").glob("**/*.pxl"))


def lark_from_grammar() -> Lark:
    """Lark's own parser for the grammar, built from the grammar file without any cache."""
    grammar = (data_dir("grammar") / "pxl.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="basic", maybe_placeholders=True, postlex=PxlIndenter())


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("pxl-parser-*.lark"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(directory))
    return directory


def test_a_parser_loaded_from_the_cache_parses_as_lark_built_from_the_grammar(cache_dir):
    new_parser()  # writes the cache
    [written] = cache_files(cache_dir)
    stamp = written.stat().st_mtime_ns
    cached = new_parser()
    assert written.stat().st_mtime_ns == stamp, "the second parser was built again, not loaded"
    reference = lark_from_grammar()
    texts = [path.read_text(encoding="utf-8") for path in [*CORPUS, *SCRIPTS]]
    assert len(texts) > 10
    for text in texts:
        padded = text if text.endswith("\n") else text + "\n"
        assert cached.parse(padded) == reference.parse(padded)


def test_the_cache_directory_is_made_private(cache_dir):
    assert parser_cache_dir() == cache_dir
    assert cache_dir.stat().st_mode & 0o777 == 0o700


def test_a_damaged_cache_file_is_rebuilt(cache_dir):
    new_parser()
    [written] = cache_files(cache_dir)
    written.write_bytes(written.read_bytes()[: written.stat().st_size // 2])
    text = "import px\ndf = px.DataFrame(table='http_events')\npx.display(df.head(5))\n"
    assert new_parser().parse(text) == lark_from_grammar().parse(text)
    loaded = new_parser()  # the rebuilt file is whole again
    assert loaded.parse(text) == lark_from_grammar().parse(text)


class _Planted:
    """What a hostile cache file would hold: unpickling it creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(cache_dir: Path, marker: Path) -> None:
    """A cache file at the very name pxq would read, whose unpickling runs code."""
    new_parser()
    [path] = cache_files(cache_dir)
    first_line = path.read_bytes().split(b"\n", 1)[0]
    path.write_bytes(first_line + b"\n" + pickle.dumps(_Planted(marker)))


def test_a_planted_cache_file_is_what_the_guard_keeps_out(cache_dir, tmp_path):
    """The premise of the two tests below: in a private directory, the planted file is loaded."""
    marker = tmp_path / "ran"
    plant(cache_dir, marker)
    new_parser()
    assert marker.exists()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_cache_directory_others_may_write_is_not_used(cache_dir, tmp_path, mode):
    marker = tmp_path / "ran"
    plant(cache_dir, marker)
    cache_dir.chmod(mode)
    assert parser_cache_dir() is None
    text = "x = 1\n"
    assert new_parser().parse(text) == lark_from_grammar().parse(text)
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving the directory to another user needs root")
def test_a_cache_directory_of_another_user_is_not_used(cache_dir, tmp_path):
    marker = tmp_path / "ran"
    plant(cache_dir, marker)
    os.chown(cache_dir, 65534, 65534)  # nobody
    assert parser_cache_dir() is None
    new_parser()
    assert not marker.exists()


def test_a_symlink_to_a_directory_is_not_used(cache_dir, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    plant(cache_dir, marker)
    link = tmp_path / "link"
    link.symlink_to(cache_dir)
    monkeypatch.setenv(CACHE_DIR_ENV, str(link))
    assert parser_cache_dir() is None
    new_parser()
    assert not marker.exists()


def test_no_usable_cache_directory_still_parses(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "pxq"))
    assert parser_cache_dir() is None
    text = "def f(a):\n    return a + 1\n"
    assert new_parser().parse(text) == lark_from_grammar().parse(text)


DAY_S = 24 * 3600
# Names _cache_file would give other grammars (or Lark or Python versions).
OTHER_VERSION = "pxl-parser-0123456789abcdef-py311.lark"
OTHER_PYTHON = "pxl-parser-fedcba9876543210-py313.lark"


def _aged(path: Path, age_s: float, *, follow_symlinks: bool = True) -> Path:
    """``path``, its last write set ``age_s`` seconds back."""
    then = time.time() - age_s
    os.utime(path, (then, then), follow_symlinks=follow_symlinks)
    return path


def test_writing_a_new_cache_file_removes_stale_ones_of_other_versions_only(cache_dir, tmp_path):
    """A ~70 KB file per grammar version would pile up: the write of a new one removes the other
    versions' files written more than a week ago, and nothing else: a recent other version's file
    (another checkout, another Python), files not named as cache files, a symlink named as one
    (nor what it points to)."""
    cache_dir.mkdir(mode=0o700)
    stale = cache_dir / OTHER_VERSION
    stale.write_bytes(b"old grammar")
    _aged(stale, 8 * DAY_S)
    recent = cache_dir / OTHER_PYTHON
    recent.write_bytes(b"in use elsewhere")
    _aged(recent, 6 * DAY_S)
    unrelated = [cache_dir / "notes.txt", cache_dir / "pxl-parser-abc.lark", cache_dir / f"{OTHER_VERSION}.bak"]
    for path in unrelated:
        path.write_text("not a cache file of pxq's")
        _aged(path, 30 * DAY_S)
    outside = tmp_path / "outside.lark"
    outside.write_text("someone's file")
    _aged(outside, 30 * DAY_S)
    link = cache_dir / "pxl-parser-00000000000000aa-py311.lark"
    link.symlink_to(outside)
    _aged(link, 30 * DAY_S, follow_symlinks=False)

    new_parser()  # writes this grammar's file

    planted = {stale, recent, link, *unrelated}
    [written] = [path for path in cache_files(cache_dir) if path not in planted]
    assert written.stat().st_size > 10_000
    assert not stale.exists()
    assert recent.read_bytes() == b"in use elsewhere"
    assert all(path.read_text() == "not a cache file of pxq's" for path in unrelated)
    assert link.is_symlink() and outside.read_text() == "someone's file"


def test_loading_the_cache_prunes_nothing(cache_dir):
    new_parser()  # writes
    stale = cache_dir / OTHER_VERSION
    stale.write_bytes(b"old grammar")
    _aged(stale, 30 * DAY_S)
    new_parser()  # loads
    assert stale.exists()


def test_a_rebuilt_damaged_cache_file_counts_as_a_write(cache_dir):
    new_parser()
    [written] = cache_files(cache_dir)
    written.write_bytes(b"damaged")
    stale = cache_dir / OTHER_VERSION
    stale.write_bytes(b"old grammar")
    _aged(stale, 30 * DAY_S)
    new_parser()
    assert not stale.exists() and written.stat().st_size > len(b"damaged")


def test_pruning_does_not_enter_a_symlinked_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    stale = real / OTHER_VERSION
    stale.write_bytes(b"old grammar")
    _aged(stale, 30 * DAY_S)
    (tmp_path / "link").symlink_to(real)
    assert prune_parser_cache(tmp_path / "link", "none", time.time()) == []
    assert stale.exists()
    assert prune_parser_cache(real, "none", time.time()) == [OTHER_VERSION]
