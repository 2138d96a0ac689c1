"""Key rules: what validate_key, validate_prefix and join_key accept and refuse."""

from __future__ import annotations

import pytest

from storage import InvalidKey, StorageError, join_key, validate_key, validate_prefix
from storage.keys import MAX_KEY_BYTES

BAD_KEYS = [
    ("", "must not be empty"),
    ("/abs", "leading '/'"),
    ("/", "leading '/'"),
    ("a/", "empty segments"),
    ("a//b", "empty segments"),
    ("//a", "leading '/'"),
    (".", "'.' segments"),
    ("./a", "'.' segments"),
    ("a/./b", "'.' segments"),
    ("..", "'..' segments"),
    ("../a", "'..' segments"),
    ("a/../b", "'..' segments"),
    ("a/..", "'..' segments"),
    ("a\\b", "backslashes"),
    ("..\\a", "backslashes"),
    ("C:\\x", "backslashes"),
    ("a\x00b", "control characters"),
    ("a\nb", "control characters"),
    ("a\n", "control characters"),
    ("a/b\n", "control characters"),
    ("a\rb", "control characters"),
    ("a\tb", "control characters"),
    ("a\x1fb", "control characters"),
    ("a\x7fb", "control characters"),
    ("a\udcffb", "lone surrogates"),
    ("a" * (MAX_KEY_BYTES + 1), "at most 1024 bytes"),
    ("é" * (MAX_KEY_BYTES // 2 + 1), "at most 1024 bytes"),
    (".tmp-upload", "reserved"),
    ("logs/.tmp-x/y", "reserved"),
]

GOOD_KEYS = [
    "a",
    "a/b/c.txt",
    "experiments/my exp/main.py",
    "...",
    "a/.../b",
    ".hidden",
    "a/..b/c..",
    "tmp-x",
    "x.tmp-",
    "ünïcødé/日本語.txt",
    "a" * MAX_KEY_BYTES,
    "a-b_c=d+e@f,g;h'i\"j!k(l)m[n]o{p}~%20",
]


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS)
def test_validate_key_rejects(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey, match="invalid key") as caught:
        validate_key(key)
    assert reason in str(caught.value)
    assert caught.value.key == key
    assert isinstance(caught.value, StorageError)


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", [None, 3, b"a/b", ["a"]])
def test_validate_key_rejects_non_strings(key: object) -> None:
    with pytest.raises(InvalidKey, match="must be strings"):
        validate_key(key)  # type: ignore[arg-type]


def test_message_names_the_key_and_the_problem() -> None:
    with pytest.raises(InvalidKey) as caught:
        validate_key("a/../b")
    assert str(caught.value) == "invalid key 'a/../b': '..' segments are not allowed"


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [("", ""), ("a", "a/"), ("a/", "a/"), ("a/b", "a/b/"), ("a/b/", "a/b/"), ("...", ".../")],
)
def test_validate_prefix_returns_folder_form(prefix: str, folder: str) -> None:
    assert validate_prefix(prefix) == folder


@pytest.mark.parametrize(
    "prefix", ["/", "/a", "a//", "a//b/", "../", "a/./", "a\\b/", "a\x00/", "./"]
)
def test_validate_prefix_rejects(prefix: str) -> None:
    with pytest.raises(InvalidKey, match="invalid prefix"):
        validate_prefix(prefix)


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("a",), "a"),
        (("a", "b", "c.txt"), "a/b/c.txt"),
        (("a/", "b"), "a/b"),
        (("", "a", "", "b"), "a/b"),
        (("experiments/x/", "sub/file"), "experiments/x/sub/file"),
    ],
)
def test_join_key(parts: tuple[str, ...], key: str) -> None:
    assert join_key(*parts) == key


@pytest.mark.parametrize(
    "parts", [(), ("",), ("a", "/etc/passwd"), ("a", ".."), ("a", "../b"), ("a//", "b")]
)
def test_join_key_rejects(parts: tuple[str, ...]) -> None:
    with pytest.raises(InvalidKey):
        join_key(*parts)
