"""Unit tests of RangeSet, checked against a plain set of byte offsets."""

import random

from pys3fs.ranges import RangeSet


def covered(rs: RangeSet) -> set[int]:
    return {i for s, e in rs for i in range(s, e)}


def test_add_merges_touching_and_overlapping_ranges():
    rs = RangeSet([(0, 10), (20, 30)])
    rs.add(10, 20)
    assert list(rs) == [(0, 30)]
    rs.add(40, 50)
    rs.add(45, 60)
    assert list(rs) == [(0, 30), (40, 60)]


def test_remove_splits_ranges():
    rs = RangeSet([(0, 100)])
    rs.remove(10, 20)
    assert list(rs) == [(0, 10), (20, 100)]
    rs.clip(50)
    assert list(rs) == [(0, 10), (20, 50)]


def test_gaps_contains_overlaps():
    rs = RangeSet([(10, 20), (30, 40)])
    assert rs.gaps(0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert rs.gaps(12, 18) == []
    assert rs.contains(10, 20) and not rs.contains(10, 21)
    assert rs.overlaps(19, 25) and not rs.overlaps(20, 30)
    assert rs.total() == 20


def test_random_operations_match_a_set_model():
    rng = random.Random(7)
    for _ in range(200):
        rs, model = RangeSet(), set()
        for _ in range(30):
            s = rng.randrange(0, 200)
            e = s + rng.randrange(0, 40)
            if rng.random() < 0.6:
                rs.add(s, e)
                model |= set(range(s, e))
            else:
                rs.remove(s, e)
                model -= set(range(s, e))
            assert covered(rs) == model
            a = rng.randrange(0, 200)
            b = a + rng.randrange(0, 60)
            gap_bytes = {i for gs, ge in rs.gaps(a, b) for i in range(gs, ge)}
            assert gap_bytes == set(range(a, b)) - model
            assert rs.contains(a, b) == (set(range(a, b)) <= model)
        starts = [s for s, _ in rs]
        assert starts == sorted(starts)
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(list(rs), list(rs)[1:], strict=False))
