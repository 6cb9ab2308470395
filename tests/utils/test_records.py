"""utils/records.py: the frozen records of the start path behave as the
``@dataclass(frozen=True)`` classes they replace (config.py, runner.Target)."""
import pytest

from retracesoftware.utils.records import FrozenInstanceError, field, fields, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: tuple = field(default_factory=tuple)
    made: list = field(default_factory=list)


@record
class Pair:
    a: int
    b: str


def test_init_defaults_and_factories():
    p = Point(1)
    assert (p.x, p.y, p.tags) == (1, 0, ())
    assert Point(1, made=[1]).made == [1] and Point(1).made is not Point(1).made
    assert Point(x=2, y=3) == Point(2, 3)
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        Point(1, x=2)
    with pytest.raises(TypeError):
        Point(1, z=2)
    with pytest.raises(TypeError):
        Point(1, 2, (), [], 5)


def test_frozen_eq_hash_repr():
    p = Point(1, 2, ("a",))
    with pytest.raises(FrozenInstanceError):
        p.x = 5
    with pytest.raises(AttributeError):
        del p.y
    assert p == Point(1, 2, ("a",)) and p != Point(1, 3, ("a",))
    assert (p == (1, 2, ("a",), [])) is False
    with pytest.raises(TypeError):
        hash(Point(1, 2))      # a list field: unhashable, as with dataclasses
    assert hash(Pair(1, "a")) == hash(Pair(1, "a")) and {Pair(1, "a"), Pair(1, "a")} == {Pair(1, "a")}
    assert repr(p) == "Point(x=1, y=2, tags=('a',), made=[])"
    assert Point.y == 0 and "tags" not in Point.__dict__


def test_fields_and_replace():
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "made"]
    p = Point(1, 2)
    q = replace(p, y=7)
    assert (q.x, q.y) == (1, 7) and p.y == 2
    with pytest.raises(TypeError):
        replace(p, nope=1)
    with pytest.raises(TypeError):
        fields(object())


def test_a_required_field_after_a_default_is_refused():
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 0
            b: int
