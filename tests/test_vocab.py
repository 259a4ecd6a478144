"""Tests for regionspot.vocab: built-in vocabularies, parsing of every input form, every error."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from regionspot.vocab import (
    BUILTIN_VOCABULARIES,
    MAX_NAME_CHARS,
    VocabularyError,
    builtin_category_ids,
    builtin_lvis_frequencies,
    builtin_vocabulary,
    name_problem,
    parse_vocabulary,
    validate_vocabulary,
)

# ---------------------------------------------------------------- built-ins


def test_lvis_builtin() -> None:
    names = builtin_vocabulary("lvis")
    assert len(names) == 1203
    assert names[0] == "aerosol can"
    assert "bat (animal)" in names
    assert not any("_" in n for n in names)
    freqs = builtin_lvis_frequencies()
    assert len(freqs) == 1203
    assert Counter(freqs) == {"r": 337, "c": 461, "f": 405}
    assert builtin_category_ids("lvis") == list(range(1, 1204))


def test_lvis_builtin_matches_shared_source(shared_data: Path) -> None:
    source = json.loads((shared_data / "vocab" / "lvis_v1_categories.json").read_text())
    source.sort(key=lambda c: c["id"])
    assert builtin_vocabulary("lvis") == [c["name"].replace("_", " ") for c in source]
    assert builtin_lvis_frequencies() == [c["frequency"] for c in source]


def test_coco_builtin(shared_data: Path) -> None:
    names = builtin_vocabulary("coco")
    ids = builtin_category_ids("coco")
    assert len(names) == len(ids) == 80
    assert names[0] == "person" and names[-1] == "toothbrush"
    assert ids[0] == 1 and ids[-1] == 90 and 12 not in ids  # COCO ids have gaps
    assert ids == sorted(ids)
    source = json.loads((shared_data / "vocab" / "coco_categories.json").read_text())
    assert dict(zip(ids, names, strict=True)) == {c["id"]: c["name"] for c in source}


def test_objects365_builtin_uses_cleaned_names(shared_data: Path) -> None:
    names = builtin_vocabulary("objects365")
    assert len(names) == 365
    assert builtin_category_ids("objects365") == list(range(1, 366))
    assert "Monitor/TV" in names and "Moniter/TV" not in names
    source = json.loads((shared_data / "vocab" / "objects365_categories.json").read_text())
    assert names == [c["name"] for c in sorted(source, key=lambda c: c["id"])]


@pytest.mark.parametrize("name", BUILTIN_VOCABULARIES)
def test_builtins_are_valid_vocabularies(name: str) -> None:
    names = builtin_vocabulary(name)
    assert validate_vocabulary(names) == names


@pytest.mark.parametrize(("spelling", "count"), [("LVIS", 1203), ("Lvis_V1", 1203), ("COCO", 80),
                                                 ("Objects365", 365), ("o365", 365), (" coco ", 80)])
def test_builtin_names_case_insensitive_and_aliases(spelling: str, count: int) -> None:
    assert len(builtin_vocabulary(spelling)) == count
    assert len(parse_vocabulary(spelling)) == count


def test_builtin_returns_fresh_lists() -> None:
    names = builtin_vocabulary("coco")
    names.clear()
    assert len(builtin_vocabulary("coco")) == 80


def test_unknown_builtin() -> None:
    with pytest.raises(VocabularyError, match=r"unknown built-in vocabulary 'imagenet'.*lvis, coco, objects365"):
        builtin_vocabulary("imagenet")
    with pytest.raises(VocabularyError, match="unknown built-in"):
        builtin_category_ids("nope")


# ---------------------------------------------------------------- parsing


def test_inline_names() -> None:
    assert parse_vocabulary(" cat,dog , traffic light ") == ["cat", "dog", "traffic light"]
    assert parse_vocabulary("zebra") == ["zebra"]
    assert parse_vocabulary("Monitor/TV") == ["Monitor/TV"]


def test_list_and_tuple_used_as_is() -> None:
    assert parse_vocabulary(["a, b", " c "]) == ["a, b", "c"]  # no splitting, only stripping
    assert parse_vocabulary(("coco",)) == ["coco"]  # not expanded to the built-in


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "names.txt"
    text = "\ufeff# my vocabulary\ncat\n\n   \n  dog  \n# trailing comment\nred, ripe apple\n"
    path.write_text(text, encoding="utf-8")
    expected = ["cat", "dog", "red, ripe apple"]
    assert parse_vocabulary(str(path)) == expected
    assert parse_vocabulary(path) == expected


def test_file_without_suffix(tmp_path: Path) -> None:
    path = tmp_path / "classes"
    path.write_text("a\nb\n")
    assert parse_vocabulary(str(path)) == ["a", "b"]


def test_json_list_of_strings(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps(["cat", "dog"]))
    assert parse_vocabulary(str(path)) == ["cat", "dog"]


def test_json_list_of_dicts(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps([{"id": 3, "name": "cat"}, {"name": " dog "}]))
    assert parse_vocabulary(str(path)) == ["cat", "dog"]


def test_json_coco_style_categories(tmp_path: Path, coco_sample: Path) -> None:
    assert parse_vocabulary(str(coco_sample / "annotations.json")) == builtin_vocabulary("coco")


def test_builtin_name_wins_over_a_file_of_that_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("coco").write_text("just one\n")
    assert len(parse_vocabulary("coco")) == 80


def test_file_path_with_comma(tmp_path: Path) -> None:
    path = tmp_path / "a,b.txt"
    path.write_text("x\ny\n")
    assert parse_vocabulary(str(path)) == ["x", "y"]


# ---------------------------------------------------------------- validation errors


@pytest.mark.parametrize("spec", ["", "   ", [], ()])
def test_empty_vocabulary(spec: object) -> None:
    with pytest.raises(VocabularyError, match="empty"):
        parse_vocabulary(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "index"), [(["cat", "  "], 1), (["", "dog"], 0), ("cat,,dog", 1), ("cat, dog,", 2)])
def test_empty_name(spec: object, index: int) -> None:
    with pytest.raises(VocabularyError, match=f"entry {index} is an empty name"):
        parse_vocabulary(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 3, b"cat", ["nested"]])
def test_non_string_name(bad: object) -> None:
    with pytest.raises(VocabularyError, match=r"entry 1 is .* not a string"):
        validate_vocabulary(["cat", bad])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", ["cat\ndog", "cat\tdog", "a\x00b"])
def test_control_characters_rejected(bad: str) -> None:
    with pytest.raises(VocabularyError, match=r"entry 1 .* control character"):
        validate_vocabulary(["ok", bad])


def test_duplicates_named_in_message() -> None:
    with pytest.raises(VocabularyError) as info:
        validate_vocabulary(["cat", "dog", " Cat", "bird", "DOG", "hot  dog", "Hot dog"])
    message = str(info.value)
    assert "3 duplicated" in message
    assert "'cat' (entry 0) = 'Cat' (entry 2)" in message
    assert "'dog' (entry 1) = 'DOG' (entry 4)" in message
    assert "'hot  dog' (entry 5) = 'Hot dog' (entry 6)" in message
    assert "bird" not in message


def test_duplicates_in_inline_and_file(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match=r"duplicated.*'cat'"):
        parse_vocabulary("cat, dog, CAT")
    path = tmp_path / "dup.txt"
    path.write_text("a\nb\na\n")
    with pytest.raises(VocabularyError, match="duplicated"):
        parse_vocabulary(path)


def test_validate_strips_and_keeps_order() -> None:
    assert validate_vocabulary(("  b", "a  ", "c")) == ["b", "a", "c"]


def test_validate_rejects_a_bare_string() -> None:
    with pytest.raises(VocabularyError, match=r"list of names.*parse_vocabulary"):
        validate_vocabulary("cat, dog")  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [42, {"cat", "dog"}, None, b"cat"])
def test_unsupported_spec_type(spec: object) -> None:
    with pytest.raises(VocabularyError, match="unsupported vocabulary type"):
        parse_vocabulary(spec)  # type: ignore[arg-type]


# ---------------------------------------------------------------- file errors


@pytest.mark.parametrize("name", ["missing.txt", "missing.json"])
def test_missing_file_string(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(VocabularyError, match="not found") as info:
        parse_vocabulary(str(path))
    assert str(path) in str(info.value)


def test_missing_file_path_object(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="not found"):
        parse_vocabulary(tmp_path / "classes")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="directory"):
        parse_vocabulary(str(tmp_path))
    with pytest.raises(VocabularyError, match="directory"):
        parse_vocabulary(tmp_path)


def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[\"cat\", ")
    with pytest.raises(VocabularyError, match="not valid JSON") as info:
        parse_vocabulary(str(path))
    assert "bad.json" in str(info.value)


@pytest.mark.parametrize(("payload", "match"), [({"names": ["a"]}, "expected a JSON list"),
                                                ("cat", "expected a JSON list"),
                                                (["a", 3], "item 1 must be a string"),
                                                ([{"label": "a"}], "item 0 must be a string")])
def test_malformed_json(tmp_path: Path, payload: object, match: str) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(VocabularyError, match=match):
        parse_vocabulary(path)


def test_json_dict_with_non_string_name(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps([{"name": "a"}, {"name": 7}]))
    with pytest.raises(VocabularyError, match="entry 1 is int"):
        parse_vocabulary(path)


@pytest.mark.parametrize("content", ["", "# only a comment\n\n", "[]"])
def test_file_without_names(tmp_path: Path, content: str) -> None:
    path = tmp_path / ("v.json" if content == "[]" else "v.txt")
    path.write_text(content)
    with pytest.raises(VocabularyError, match="holds no names"):
        parse_vocabulary(path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(VocabularyError, match="not a UTF-8"):
        parse_vocabulary(path)


def test_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="the vocabulary is empty"):
        parse_vocabulary("")


@pytest.mark.parametrize(("names", "message"), [
    (["cat", "_"], "entry 1 '_' is empty once cleaned"),
    (["-other"], "empty once cleaned"),
    (["x" * (MAX_NAME_CHARS + 1)], f"at most {MAX_NAME_CHARS}"),
])
def test_names_a_prompt_cannot_use_are_refused(names: list[str], message: str) -> None:
    with pytest.raises(VocabularyError, match=message):
        validate_vocabulary(names)
    assert validate_vocabulary(["y" * MAX_NAME_CHARS, "bow_(weapon)"])[1] == "bow_(weapon)"


@pytest.mark.parametrize(("name", "problem"), [
    (5, "is int 5, not a string"),
    (None, "is NoneType None, not a string"),
    ("  ", "is an empty name"),
    ("x" * (MAX_NAME_CHARS + 1), (f"is {MAX_NAME_CHARS + 1} characters long; a name may have at most "
                                  f"{MAX_NAME_CHARS} (CLIP reads only the first 77 tokens of a prompt)")),
    (" _ ", "'_' is empty once cleaned for a prompt (underscores and -other/-merged/-stuff marks are removed)"),
    ("sofa\nbed", "'sofa\\nbed' contains a control character (newline, tab...)"),
])
def test_name_problem_is_the_reason_validate_vocabulary_gives(name: object, problem: str) -> None:
    assert name_problem(name) == problem
    with pytest.raises(VocabularyError) as info:
        validate_vocabulary(["ok", name])  # type: ignore[list-item]
    assert str(info.value) == f"vocabulary entry 1 {problem}"


@pytest.mark.parametrize("name", ["cat", "  traffic_light ", "bow_(weapon)", "y" * MAX_NAME_CHARS])
def test_name_problem_is_none_for_a_usable_name(name: str) -> None:
    assert name_problem(name) is None
