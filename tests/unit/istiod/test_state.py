"""Unit tests for services.istiod.store.state: the committed-object index and the writer's Txn.

The index is what every GET, LIST and WATCH reads; the Txn is what every mutation decides
against. Both must agree exactly with a plain dictionary of "what was written last".
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.istiod.store.state import ADDED, DELETED, MODIFIED, Change, Index, Stored, Txn

pytestmark = pytest.mark.unit

PODS, SERVICES = "pods", "services"


def doc(name: str, namespace: str = "demo", **extra: Any) -> dict[str, Any]:
    """A minimal object document."""
    meta = {"name": name, "uid": f"uid-{namespace}-{name}"}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, **extra}


def stored(kind: str, namespace: str, name: str, revision: int, **extra: Any) -> Stored:
    data = doc(name, namespace, **extra)
    data["metadata"]["resourceVersion"] = str(revision)
    return Stored(kind, namespace, name, revision, data)


def names(objs: Any) -> list[tuple[str, str]]:
    return [(o.namespace, o.name) for o in objs]


@pytest.fixture
def index() -> Index:
    """pods demo/a (rev 1), demo/b (rev 2), other/a (rev 3); service demo/web (rev 4)."""
    idx = Index()
    for rev, (kind, ns, name) in enumerate(
        [(PODS, "demo", "a"), (PODS, "demo", "b"), (PODS, "other", "a"), (SERVICES, "demo", "web")], start=1
    ):
        idx.put(stored(kind, ns, name, rev))
    idx.revision = 4
    return idx


# --- Index ---------------------------------------------------------------------------------------


def test_index_get_finds_by_kind_namespace_and_name(index: Index) -> None:
    found = index.get(PODS, "demo", "b")
    assert found is not None
    assert (found.kind, found.namespace, found.name, found.revision) == (PODS, "demo", "b", 2)
    assert index.get(PODS, "demo", "web") is None  # a service's name, not a pod's
    assert index.get(SERVICES, "other", "web") is None
    assert index.get("nodes", "", "n1") is None


def test_index_list_is_ordered_by_namespace_then_name_regardless_of_insertion() -> None:
    idx = Index()
    for ns, name in [("zeta", "b"), ("alpha", "z"), ("zeta", "a"), ("alpha", "a"), ("mid", "m")]:
        idx.put(stored(PODS, ns, name, 1))
    assert names(idx.list(PODS)) == [("alpha", "a"), ("alpha", "z"), ("mid", "m"), ("zeta", "a"), ("zeta", "b")]
    assert names(idx.list(PODS, "zeta")) == [("zeta", "a"), ("zeta", "b")]
    assert list(idx.list(PODS, "nowhere")) == []
    assert list(idx.list("nodes")) == []


def test_index_put_replaces_the_previous_version(index: Index) -> None:
    newer = stored(PODS, "demo", "a", 9, spec={"x": 1})
    index.put(newer)
    assert index.get(PODS, "demo", "a") is newer
    assert index.count(PODS) == 3


def test_index_remove_forgets_the_object_and_tolerates_missing_ones(index: Index) -> None:
    index.remove(PODS, "other", "a")
    assert index.get(PODS, "other", "a") is None
    assert names(index.list(PODS)) == [("demo", "a"), ("demo", "b")]
    index.remove(PODS, "other", "a")  # already gone
    index.remove("nodes", "", "never-existed")
    assert index.count() == 3


def test_index_count_per_kind_and_in_total(index: Index) -> None:
    assert index.count(PODS) == 3
    assert index.count(SERVICES) == 1
    assert index.count("nodes") == 0
    assert index.count() == 4


def test_index_apply_puts_or_removes_and_moves_the_revision(index: Index) -> None:
    added = stored(PODS, "demo", "c", 5)
    index.apply(Change(5, ADDED, added, None))
    assert index.get(PODS, "demo", "c") is added
    assert index.revision == 5

    old = index.get(PODS, "demo", "a")
    modified = stored(PODS, "demo", "a", 6, spec={"v": 2})
    index.apply(Change(6, MODIFIED, modified, old))
    assert index.get(PODS, "demo", "a") is modified
    assert index.revision == 6

    last = stored(PODS, "demo", "b", 7)
    index.apply(Change(7, DELETED, last, index.get(PODS, "demo", "b")))
    assert index.get(PODS, "demo", "b") is None
    assert index.revision == 7
    assert names(index.list(PODS)) == [("demo", "a"), ("demo", "c"), ("other", "a")]


def test_stored_serializes_once_and_exposes_uid() -> None:
    obj = stored(PODS, "demo", "a", 1)
    assert obj.uid == "uid-demo-a"
    assert obj.json == b'{"metadata":{"name":"a","uid":"uid-demo-a","namespace":"demo","resourceVersion":"1"}}'
    assert obj.json is obj.json
    assert Stored(PODS, "demo", "x", 1, {"metadata": {"name": "x"}}).uid == ""


# --- Txn: reads and writes -----------------------------------------------------------------------


def test_txn_reads_see_staged_writes_and_deletions(index: Index) -> None:
    txn = Txn(index, index.revision + 1)
    written = txn.write(PODS, "demo", "new", doc("new"))
    txn.delete(PODS, "demo", "a")
    assert txn.get(PODS, "demo", "new") is written
    assert txn.get(PODS, "demo", "a") is None
    assert txn.get(PODS, "demo", "b") is index.get(PODS, "demo", "b")
    # Nothing reaches the index until the writer applies the changes.
    assert index.get(PODS, "demo", "new") is None
    assert index.get(PODS, "demo", "a") is not None


def test_write_stamps_increasing_revisions_and_the_resource_version(index: Index) -> None:
    txn = Txn(index, 5)
    first = txn.write(PODS, "demo", "x", doc("x"))
    second = txn.write(SERVICES, "demo", "y", doc("y"))
    third = txn.write(PODS, "demo", "x", doc("x", spec={"v": 2}))
    assert [first.revision, second.revision, third.revision] == [5, 6, 7]
    assert [o.data["metadata"]["resourceVersion"] for o in (first, second, third)] == ["5", "6", "7"]
    assert txn.next_revision == 8
    assert [c.revision for c in txn.changes] == [5, 6, 7]


def test_write_reports_added_for_a_new_object_and_modified_with_prev_otherwise(index: Index) -> None:
    txn = Txn(index, 5)
    before = index.get(PODS, "demo", "a")
    modified = txn.write(PODS, "demo", "a", doc("a", spec={"v": 2}))
    added = txn.write(PODS, "demo", "c", doc("c"))
    again = txn.write(PODS, "demo", "c", doc("c", spec={"v": 3}))
    ops = [(c.op, c.obj, c.prev) for c in txn.changes]
    assert ops == [(MODIFIED, modified, before), (ADDED, added, None), (MODIFIED, again, added)]


def test_write_after_delete_in_the_same_txn_is_added_again(index: Index) -> None:
    txn = Txn(index, 5)
    txn.delete(PODS, "demo", "a")
    recreated = txn.write(PODS, "demo", "a", doc("a"))
    assert [c.op for c in txn.changes] == [DELETED, ADDED]
    assert txn.changes[1].prev is None
    assert txn.get(PODS, "demo", "a") is recreated


def test_delete_stamps_the_deletion_revision_on_a_copy(index: Index) -> None:
    before = index.get(PODS, "demo", "a")
    assert before is not None
    snapshot = before.json
    txn = Txn(index, 5)
    last = txn.delete(PODS, "demo", "a")
    assert last.revision == 5
    assert last.data["metadata"]["resourceVersion"] == "5"
    assert last.data["metadata"]["uid"] == before.uid
    # The stored version is shared with readers and the watch history: it must not change.
    assert before.data["metadata"]["resourceVersion"] == "1"
    assert before.data is not last.data
    assert before.data["metadata"] is not last.data["metadata"]
    assert before.json == snapshot
    (change,) = txn.changes
    assert (change.revision, change.op, change.obj, change.prev) == (5, DELETED, last, before)


def test_delete_of_a_missing_object_is_a_programming_error(index: Index) -> None:
    txn = Txn(index, 5)
    with pytest.raises(AssertionError):
        txn.delete(PODS, "demo", "ghost")
    txn.delete(PODS, "demo", "a")
    with pytest.raises(AssertionError):
        txn.delete(PODS, "demo", "a")


# --- Txn: children -------------------------------------------------------------------------------


def test_child_writes_are_invisible_to_the_parent_until_committed(index: Index) -> None:
    parent = Txn(index, 5)
    child = parent.child()
    child.write(PODS, "demo", "c", doc("c"))
    child.delete(PODS, "demo", "a")
    assert parent.get(PODS, "demo", "c") is None
    assert parent.get(PODS, "demo", "a") is index.get(PODS, "demo", "a")
    assert parent.changes == []
    assert parent.next_revision == 5

    child.commit_into_parent()
    assert parent.get(PODS, "demo", "c") is not None
    assert parent.get(PODS, "demo", "a") is None
    assert [(c.revision, c.op) for c in parent.changes] == [(5, ADDED), (6, DELETED)]
    assert parent.next_revision == 7


def test_discarded_child_leaves_the_parent_untouched(index: Index) -> None:
    parent = Txn(index, 5)
    kept = parent.write(PODS, "demo", "kept", doc("kept"))
    child = parent.child()
    assert child.get(PODS, "demo", "kept") is kept  # children read through the parent
    child.write(PODS, "demo", "kept", doc("kept", spec={"v": 2}))
    child.delete(PODS, "demo", "b")
    del child  # the mutation failed: the writer drops the child

    assert parent.get(PODS, "demo", "kept") is kept
    assert parent.get(PODS, "demo", "b") is index.get(PODS, "demo", "b")
    assert [c.obj for c in parent.changes] == [kept]
    assert parent.next_revision == 6
    # The next child starts from the parent's revision, so revisions stay contiguous.
    assert parent.child().write(PODS, "demo", "d", doc("d")).revision == 6


def test_list_merges_index_staged_writes_and_deletions_across_parent_and_child(index: Index) -> None:
    parent = Txn(index, 5)
    parent.delete(PODS, "demo", "b")
    parent.write(PODS, "demo", "d", doc("d"))
    parent.write(SERVICES, "demo", "db", doc("db"))  # another kind: never in a pod list
    child = parent.child()
    child_b = child.write(PODS, "demo", "b", doc("b", spec={"back": True}))  # re-created
    child.delete(PODS, "demo", "a")
    child.delete(PODS, "demo", "d")  # staged by the parent, deleted by the child
    child_e = child.write(PODS, "other", "e", doc("e", "other"))

    assert names(child.list(PODS)) == [("demo", "b"), ("other", "a"), ("other", "e")]
    assert child.list(PODS)[0] is child_b
    assert names(child.list(PODS, "demo")) == [("demo", "b")]
    assert child.list(PODS, "other")[1] is child_e
    assert names(parent.list(PODS)) == [("demo", "a"), ("demo", "d"), ("other", "a")]
    assert names(parent.list(SERVICES)) == [("demo", "db"), ("demo", "web")]
    assert names(parent.list(PODS, "demo")) == [("demo", "a"), ("demo", "d")]

    child.commit_into_parent()
    assert names(parent.list(PODS)) == names(child.list(PODS))


# --- property: Txn then Index.apply equals a dict --------------------------------------------------

KEYS = [(kind, ns, name) for kind in (PODS, SERVICES) for ns in ("a", "b") for name in ("x", "y")]
# One step: (key index, True to write / False to delete). A batch of steps runs in one child,
# which is committed or discarded, as the writer does with each request of a batch.
steps = st.lists(st.tuples(st.integers(0, len(KEYS) - 1), st.booleans()), max_size=6)
batches = st.lists(st.tuples(steps, st.booleans()), max_size=8)


@settings(max_examples=150, deadline=None)
@given(initial=st.sets(st.integers(0, len(KEYS) - 1)), txns=st.lists(batches, min_size=1, max_size=3))
def test_txn_then_apply_matches_a_plain_dict(initial: set[int], txns: list[list[tuple[Any, bool]]]) -> None:
    index = Index()
    model: dict[tuple[str, str, str], dict[str, Any]] = {}
    for i in sorted(initial):
        kind, ns, name = KEYS[i]
        index.put(stored(kind, ns, name, 1))
        model[KEYS[i]] = index.get(kind, ns, name).data  # type: ignore[union-attr]
    index.revision = 1
    counter = 0

    for batch in txns:  # one writer batch each
        parent = Txn(index, index.revision + 1)
        for mutation_steps, succeeds in batch:
            child = parent.child()
            staged = dict(model)
            for key_index, is_write in mutation_steps:
                key = KEYS[key_index]
                if is_write or key not in staged:
                    counter += 1
                    data = doc(key[2], key[1], spec={"n": counter})
                    child.write(*key, data)
                    staged[key] = data
                else:
                    child.delete(*key)
                    del staged[key]
            if succeeds:
                child.commit_into_parent()
                model = staged
        for kind in (PODS, SERVICES):
            assert [o.key for o in parent.list(kind)] == sorted(k for k in model if k[0] == kind)
        revisions = [c.revision for c in parent.changes]
        assert revisions == list(range(index.revision + 1, index.revision + 1 + len(revisions)))
        for change in parent.changes:
            index.apply(change)

    for kind in (PODS, SERVICES):
        assert [(o.key, o.data) for o in index.list(kind)] == [(k, model[k]) for k in sorted(model) if k[0] == kind]
    assert index.count() == len(model)
    for obj in (o for kind in (PODS, SERVICES) for o in index.list(kind)):
        assert obj.data["metadata"]["resourceVersion"] == str(obj.revision)
