"""The JSON form of dataclasses, by field type (``camflow.jsonform``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from camflow import jsonform
from camflow.errors import CamflowError, JsonFormError


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    name: str
    size: int = 0


def _even(value: Any, path: str) -> int:
    if not isinstance(value, int) or value % 2:
        raise JsonFormError(f"{path} {value!r}: expected an even integer")
    return value


@dataclass(frozen=True)
class Record:
    text: str
    count: int
    ratio: float
    flag: bool
    colour: Colour
    side: Literal["left", "right"]
    maybe: int | None
    items: tuple[Inner, ...]
    names: list[str]
    totals: dict[str, int]
    inner: Inner
    blob: bytes = field(repr=False)
    even: int = field(default=0, metadata=jsonform.read_with(_even))
    later: str = "default"


RECORD = Record(
    "t",
    3,
    0.5,
    True,
    Colour.BLUE,
    "left",
    None,
    (Inner("a", 1), Inner("b")),
    ["x"],
    {"k": 2},
    Inner("c"),
    b"\x00",
    4,
)


def test_round_trip_with_the_bytes_given() -> None:
    form = jsonform.to_json(RECORD, skip="blob")
    assert form == {
        "text": "t",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "colour": "blue",
        "side": "left",
        "maybe": None,
        "items": [{"name": "a", "size": 1}, {"name": "b", "size": 0}],
        "names": ["x"],
        "totals": {"k": 2},
        "inner": {"name": "c", "size": 0},
        "even": 4,
        "later": "default",
    }
    assert list(form) == [name for name in Record.__dataclass_fields__ if name != "blob"]
    assert jsonform.from_json(Record, form, blob=b"\x00") == RECORD


def test_absent_fields_read_as_their_defaults_and_unknown_names_are_ignored() -> None:
    form = jsonform.to_json(RECORD, skip="blob")
    del form["later"], form["even"], form["items"][1]["size"]
    form["from_the_future"] = 1
    assert jsonform.from_json(Record, form, blob=b"\x00") == Record(**{**RECORD.__dict__, "even": 0})


def test_an_absent_field_without_a_default_is_a_key_error_naming_it() -> None:
    form = jsonform.to_json(RECORD, skip="blob")
    del form["items"][0]["name"]
    with pytest.raises(KeyError, match="name"):
        jsonform.from_json(Record, form, blob=b"")


def test_a_field_without_a_json_form_must_be_given() -> None:
    with pytest.raises(TypeError, match="blob"):
        jsonform.from_json(Record, jsonform.to_json(RECORD, skip="blob"))


def test_numbers_are_converted_to_their_field_type() -> None:
    form = {**jsonform.to_json(RECORD, skip="blob"), "count": 7.0, "ratio": 2}
    record = jsonform.from_json(Record, form, blob=b"")
    assert (record.count, record.ratio) == (7, 2.0)
    assert type(record.count) is int and type(record.ratio) is float


BAD = {
    "string": ("text", 1, "text 1: expected a string"),
    "number": ("count", "3", "count '3': expected a number"),
    "boolean as a number": ("count", True, "count True: expected a number"),
    "infinite integer": ("count", float("inf"), "count inf: out of range (OverflowError"),
    "huge float": ("ratio", 10**400, "out of range (OverflowError"),
    "flag": ("flag", 1, "flag 1: expected true or false"),
    "enum": ("colour", "green", "colour 'green': expected one of 'red', 'blue'"),
    "enum by name": ("colour", "RED", "colour 'RED': expected one of"),
    "literal": ("side", "up", "side 'up': expected one of 'left', 'right'"),
    "optional": ("maybe", "x", "maybe 'x': expected a number"),
    "array": ("items", {"name": "a"}, "items {'name': 'a'}: expected an array"),
    "nested item": ("items", [{"name": "a"}, {"name": 2}], "items[1].name 2: expected a string"),
    "nested object": ("inner", [], "inner []: expected an object"),
    "dict value": ("totals", {"k": "v"}, "totals['k'] 'v': expected a number"),
    "custom": ("even", 3, "even 3: expected an even integer"),
}


@pytest.mark.parametrize(("name", "value", "message"), BAD.values(), ids=BAD.keys())
def test_a_value_of_the_wrong_form_names_its_path_value_and_expected_form(
    name: str, value: Any, message: str
) -> None:
    form = {**jsonform.to_json(RECORD, skip="blob"), name: value}
    with pytest.raises(JsonFormError) as err:
        jsonform.from_json(Record, form, blob=b"")
    assert message in str(err.value)
    assert isinstance(err.value, CamflowError) and isinstance(err.value, ValueError)


def test_not_an_object() -> None:
    with pytest.raises(JsonFormError, match=r"Inner \[1\]: expected an object"):
        jsonform.from_json(Inner, [1])  # type: ignore[arg-type]


def test_a_type_without_a_json_form_is_refused_when_first_read() -> None:
    @dataclass(frozen=True)
    class Odd:
        value: complex

    with pytest.raises(TypeError, match="no JSON form"):
        jsonform.from_json(Odd, {"value": 1})
