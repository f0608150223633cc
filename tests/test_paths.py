"""Unit tests of the path <-> key mapping."""

import errno

import pytest
from fuse import FuseOSError

from pys3fs.paths import KeyMap, is_below, join, normalize_prefix, parent, valid_name


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", ""), ("/", ""), ("/a/b", "a/b/"), ("a/b/", "a/b/"), ("//a//b//", "a/b/")],
)
def test_normalize_prefix(given, expected):
    assert normalize_prefix(given) == expected


def test_keys_under_a_prefix():
    keys = KeyMap("data/")
    assert keys.key("/x/y.txt") == "data/x/y.txt"
    assert keys.dir_prefix("/x") == "data/x/"
    assert keys.dir_prefix("/") == "data/"
    assert keys.path("data/x/y.txt") == "/x/y.txt"
    assert keys.path("data/x/") == "/x"


def test_keys_without_prefix():
    keys = KeyMap("")
    assert keys.key("/a") == "a"
    assert keys.dir_prefix("/") == ""


def test_name_over_255_bytes_is_enametoolong():
    with pytest.raises(FuseOSError) as exc:
        KeyMap("").key("/" + "é" * 128)  # 256 bytes of UTF-8
    assert exc.value.errno == errno.ENAMETOOLONG


def test_key_over_1024_bytes_is_enametoolong():
    path = "/".join(["d" * 200] * 5) + "/" + "f" * 30
    with pytest.raises(FuseOSError) as exc:
        KeyMap("").key("/" + path)
    assert exc.value.errno == errno.ENAMETOOLONG
    assert KeyMap("").key("/" + "/".join(["d" * 200] * 5)).startswith("d")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "nul\0", "x" * 256])
def test_names_that_cannot_be_paths(name):
    assert not valid_name(name)


@pytest.mark.parametrize("name", ["a", "with space", "ünïcode", "100%+?#", "x" * 255])
def test_names_that_can_be_paths(name):
    assert valid_name(name)


def test_tree_helpers():
    assert parent("/a/b") == "/a"
    assert parent("/a") == "/"
    assert join("/", "a") == "/a"
    assert join("/a", "b") == "/a/b"
    assert is_below("/a/b", "/a")
    assert is_below("/a", "/")
    assert not is_below("/ab", "/a")
    assert not is_below("/a", "/a")
