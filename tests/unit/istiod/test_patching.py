"""Unit tests for services.istiod.patching: merge patch, JSON patch and strategic merge patch.

The strategic-merge cases use the exact bodies kubectl 1.32 and the kubernetes Python client send
(docs/kubectl-compat §2, §3, §7); expected results follow apimachinery's strategicpatch package.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.istiod.patching import (
    PRIMITIVE_MERGE,
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    kubernetes_merge_key,
    merge_patch,
)

pytestmark = pytest.mark.unit


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "demo",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
            "resourceVersion": "7",
        },
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "nginx:1.25",
                    "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                },
                {"name": "side", "image": "busybox", "args": ["sleep", "1d"]},
            ],
            "tolerations": [{"key": "a", "operator": "Exists"}],
        },
    }


def _directives(value: Any, path: str = "") -> list[str]:
    """Every key starting with `$` anywhere in `value`."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k.startswith("$"):
                found.append(f"{path}.{k}")
            found += _directives(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _directives(v, f"{path}[{i}]")
    return found


# --- RFC 7386 merge patch --------------------------------------------------------------------------

# RFC 7386 Appendix A, every example in order.
RFC7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_rfc7386_appendix(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == expected
    assert (target, patch) == before


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [(t, p, e) for t, p, e in RFC7386_EXAMPLES if isinstance(t, dict) and isinstance(p, dict)],
)
def test_apply_merge_patch_rfc7386_object_examples(target: Any, patch: Any, expected: Any) -> None:
    assert apply_merge_patch(target, patch) == expected


def test_kubectl_label_set_and_remove() -> None:
    pod = _pod()
    labelled = apply_merge_patch(pod, {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}})
    assert labelled["metadata"]["labels"] == {
        "app": "web",
        "tier": "front",
        "istio.io/dataplane-mode": "ambient",
    }
    unlabelled = apply_merge_patch(labelled, {"metadata": {"labels": {"istio.io/dataplane-mode": None}}})
    assert unlabelled["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert unlabelled["spec"] == pod["spec"]


def test_kubectl_annotate_on_object_without_annotations() -> None:
    out = apply_merge_patch({"metadata": {"name": "x"}}, {"metadata": {"annotations": {"a": "b"}}})
    assert out == {"metadata": {"name": "x", "annotations": {"a": "b"}}}


def test_merge_patch_custom_resource_replaces_lists() -> None:
    policy = {"spec": {"action": "ALLOW", "rules": [{"from": [{"source": {"principals": ["a"]}}]}]}}
    patch = {"spec": {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}}
    assert apply_merge_patch(policy, patch) == patch


@pytest.mark.parametrize("body", [["c"], "bar", None, 3])
def test_apply_merge_patch_refuses_non_object_body(body: Any) -> None:
    with pytest.raises(PatchError) as info:
        apply_merge_patch({"a": 1}, body)
    assert info.value.bad_request
    assert "JSON object" in info.value.message


def test_merge_patch_result_does_not_alias_inputs() -> None:
    target = {"keep": {"x": [1]}, "a": 1}
    patch = {"new": {"y": [2]}}
    out = apply_merge_patch(target, patch)
    out["keep"]["x"].append(9)
    out["new"]["y"].append(9)
    assert target == {"keep": {"x": [1]}, "a": 1}
    assert patch == {"new": {"y": [2]}}


# --- RFC 6902 JSON patch ---------------------------------------------------------------------------


def test_json_patch_add_replace_remove() -> None:
    pod = _pod()
    ops = [
        {"op": "add", "path": "/metadata/labels/version", "value": "v2"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:1.26"},
        {"op": "remove", "path": "/spec/containers/1"},
        {"op": "test", "path": "/metadata/name", "value": "web"},
    ]
    out = apply_json_patch(pod, ops)
    assert out["metadata"]["labels"]["version"] == "v2"
    assert [c["name"] for c in out["spec"]["containers"]] == ["main"]
    assert out["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert pod == _pod()


def test_json_patch_move_and_copy() -> None:
    out = apply_json_patch(
        {"a": {"x": 1}},
        [{"op": "copy", "from": "/a", "path": "/b"}, {"op": "move", "from": "/a/x", "path": "/c"}],
    )
    assert out == {"a": {}, "b": {"x": 1}, "c": 1}


def test_json_patch_failed_test_is_422_and_atomic() -> None:
    pod = _pod()
    ops = [
        {"op": "replace", "path": "/metadata/name", "value": "other"},
        {"op": "test", "path": "/metadata/resourceVersion", "value": "6"},
    ]
    with pytest.raises(PatchError) as info:
        apply_json_patch(pod, ops)
    assert not info.value.bad_request
    assert info.value.message == 'JSON patch operation 1 (test /metadata/resourceVersion) failed: the value is not "6"'
    assert pod == _pod()


def test_json_patch_test_distinguishes_true_from_one() -> None:
    with pytest.raises(PatchError):
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": True}])


@pytest.mark.parametrize(
    ("op", "fragment"),
    [
        ({"op": "remove", "path": "/metadata/nope"}, "operation 0 (remove /metadata/nope) failed"),
        ({"op": "replace", "path": "/spec/nope", "value": 1}, "operation 0 (replace /spec/nope) failed"),
        ({"op": "add", "path": "/nope/deeper", "value": 1}, "member 'nope' not found"),
        ({"op": "add", "path": "/spec/containers/9", "value": {}}, "can't insert outside of list"),
        ({"op": "add", "path": "no-slash", "value": 1}, "Location must start with /"),
        ({"op": "frobnicate", "path": "/a"}, "operation 0 is invalid: Unknown operation 'frobnicate'"),
        ({"op": "add", "path": "/a"}, "operation 0 is invalid"),
        ({"path": "/a"}, "operation 0 is invalid"),
    ],
)
def test_json_patch_bad_operations_are_422(op: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PatchError) as info:
        apply_json_patch(_pod(), [op])
    assert not info.value.bad_request
    assert fragment in info.value.message
    assert "apiVersion" not in info.value.message  # the document is not quoted back


@pytest.mark.parametrize("body", [{"op": "add"}, "x", None, [1], [{"op": "add", "path": "/a", "value": 1}, "x"]])
def test_json_patch_body_must_be_a_list_of_objects(body: Any) -> None:
    with pytest.raises(PatchError) as info:
        apply_json_patch({}, body)
    assert info.value.bad_request


def test_json_patch_result_must_stay_an_object() -> None:
    with pytest.raises(PatchError, match="must be a JSON object"):
        apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}])


def test_json_patch_does_not_alias_the_body() -> None:
    ops = [{"op": "add", "path": "/a", "value": {"x": 1}}, {"op": "replace", "path": "/a/x", "value": 2}]
    out = apply_json_patch({}, ops)
    assert out == {"a": {"x": 2}}
    assert ops[0]["value"] == {"x": 1}


# --- strategic merge patch: kubectl's bodies ------------------------------------------------------------


def test_kubectl_apply_image_change_with_set_element_order() -> None:
    patch = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}\n"}},
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
            "containers": [{"image": "nginx:1.26", "name": "main"}],
        },
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    expected = _pod()
    expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{...}\n"
    expected["spec"]["containers"][0]["image"] = "nginx:1.26"
    assert out == expected


def test_kubectl_apply_removes_container_field_and_labels() -> None:
    patch = {
        "metadata": {"labels": None},
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}],
            "containers": [
                {"name": "main", "image": "nginx:1.25", "ports": None},
                {"$patch": "delete", "name": "side"},
            ],
        },
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    assert "labels" not in out["metadata"]
    assert out["spec"]["containers"] == [
        {
            "name": "main",
            "image": "nginx:1.25",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        }
    ]
    assert out["spec"]["tolerations"] == _pod()["spec"]["tolerations"]


def test_kubectl_label_merge_patch_works_as_strategic_too() -> None:
    # The Python client sends a dict body as strategic merge: maps merge, null deletes.
    out = apply_strategic_merge_patch(_pod(), {"metadata": {"labels": {"tier": None, "v": "2"}}})
    assert out["metadata"]["labels"] == {"app": "web", "v": "2"}


def test_set_element_order_alone_reorders() -> None:
    out = apply_strategic_merge_patch(
        _pod(), {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "main"}]}}
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "main"]


def test_set_element_order_keeps_unlisted_server_items_in_place() -> None:
    target = {"spec": {"containers": [{"name": n} for n in "abc"]}}
    patch = {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}]}}
    out = apply_strategic_merge_patch(target, patch)
    # normalizeElementOrder: `b` came before `c` on the server, so it stays ahead of it.
    assert [c["name"] for c in out["spec"]["containers"]] == ["b", "c", "a"]


def test_set_element_order_without_the_list_does_not_create_it() -> None:
    out = apply_strategic_merge_patch({"spec": {}}, {"spec": {"$setElementOrder/containers": [{"name": "a"}]}})
    assert out == {"spec": {}}


def test_set_element_order_needs_merge_keys() -> None:
    with pytest.raises(PatchError, match="does not contain declared merge key: name"):
        apply_strategic_merge_patch(_pod(), {"spec": {"$setElementOrder/containers": [{"image": "x"}]}})


def test_new_container_goes_first_as_in_kubernetes() -> None:
    # As the "kubectl patch" task page shows: an item new to the list lands before server items.
    out = apply_strategic_merge_patch(_pod(), {"spec": {"containers": [{"name": "new", "image": "redis"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["new", "main", "side"]


def test_patch_list_order_wins_over_server_order() -> None:
    out = apply_strategic_merge_patch(_pod(), {"spec": {"containers": [{"name": "side"}, {"name": "main"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "main"]


# --- strategic merge patch: merge keys ------------------------------------------------------------------


def test_env_merges_by_name() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "env": [
                        {"name": "B", "value": "20"},
                        {"name": "C", "value": "3"},
                        {"name": "A", "$patch": "delete"},
                    ],
                }
            ]
        }
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    main = out["spec"]["containers"][0]
    assert main["env"] == [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]
    assert main["image"] == "nginx:1.25"


def test_env_value_from_replaces_value_with_null() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "env": [
                        {
                            "name": "A",
                            "value": None,
                            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                        }
                    ],
                }
            ]
        }
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    assert out["spec"]["containers"][0]["env"][0] == {
        "name": "A",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }


def test_container_ports_merge_by_container_port() -> None:
    patch = {
        "spec": {
            "containers": [{"name": "main", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]
        }
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    assert out["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "name": "http"},
        {"containerPort": 443},
    ]


def test_service_ports_merge_by_port() -> None:
    service = {
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}],
        }
    }
    patch = {"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443, "$patch": "delete"}]}}
    out = apply_strategic_merge_patch(service, patch)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}]
    assert out["spec"]["selector"] == {"app": "web"}


def test_volume_mounts_merge_by_mount_path() -> None:
    pod = {"spec": {"containers": [{"name": "m", "volumeMounts": [{"name": "a", "mountPath": "/a"}]}]}}
    patch = {"spec": {"containers": [{"name": "m", "volumeMounts": [{"mountPath": "/a", "readOnly": True}]}]}}
    out = apply_strategic_merge_patch(pod, patch)
    assert out["spec"]["containers"][0]["volumeMounts"] == [{"name": "a", "mountPath": "/a", "readOnly": True}]


def test_conditions_merge_by_type_and_owner_references_by_uid() -> None:
    obj = {
        "metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]},
    }
    patch = {
        "metadata": {"ownerReferences": [{"uid": "1", "controller": True}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    out = apply_strategic_merge_patch(obj, patch)
    assert out["metadata"]["ownerReferences"] == [{"uid": "1", "name": "a", "controller": True}]
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "Scheduled", "status": "True"},
    ]


def test_lists_without_merge_key_are_replaced() -> None:
    patch = {
        "spec": {
            "tolerations": [{"key": "b", "operator": "Exists"}],
            "containers": [{"name": "side", "args": ["true"]}],
        }
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    assert out["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    assert out["spec"]["containers"][1]["args"] == ["true"]


def test_service_account_image_pull_secrets_replaced_but_pod_spec_ones_merged() -> None:
    sa = {"secrets": [{"name": "a"}], "imagePullSecrets": [{"name": "a"}]}
    out = apply_strategic_merge_patch(sa, {"secrets": [{"name": "b"}], "imagePullSecrets": [{"name": "b"}]})
    assert out == {"secrets": [{"name": "b"}, {"name": "a"}], "imagePullSecrets": [{"name": "b"}]}
    pod = apply_strategic_merge_patch(
        {"spec": {"imagePullSecrets": [{"name": "a"}]}}, {"spec": {"imagePullSecrets": [{"name": "b"}]}}
    )
    assert pod["spec"]["imagePullSecrets"] == [{"name": "b"}, {"name": "a"}]


def test_missing_merge_key_is_an_error() -> None:
    with pytest.raises(PatchError) as info:
        apply_strategic_merge_patch(_pod(), {"spec": {"containers": [{"image": "x"}]}})
    assert info.value.message == 'map: {"image": "x"} does not contain declared merge key: name'
    assert not info.value.bad_request


def test_custom_merge_key_function() -> None:
    doc = {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}
    out = apply_strategic_merge_patch(
        doc, {"items": [{"id": 2, "v": "c"}]}, merge_key=lambda p: "id" if p == ("items",) else None
    )
    assert out == {"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "c"}]}


# --- strategic merge patch: primitive lists -----------------------------------------------------------


def test_finalizers_merge_as_a_set() -> None:
    out = apply_strategic_merge_patch(
        {"metadata": {"finalizers": ["a", "b"]}}, {"metadata": {"finalizers": ["b", "c"]}}
    )
    # Union without repeats; the patch's new item goes before server-only ones (normalizeElementOrder).
    assert sorted(out["metadata"]["finalizers"]) == ["a", "b", "c"]
    assert out["metadata"]["finalizers"] == ["a", "b", "c"]


def test_delete_from_primitive_list() -> None:
    obj = {"metadata": {"finalizers": ["a", "b", "c", "b"]}}
    out = apply_strategic_merge_patch(obj, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}})
    assert out == {"metadata": {"finalizers": ["a", "c"]}}


def test_kubectl_apply_finalizer_change() -> None:
    # What kubectl apply sends when a manifest's finalizers go from [a, b] to [a, c].
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": ["a", "c"],
            "$deleteFromPrimitiveList/finalizers": ["b"],
            "finalizers": ["c"],
        }
    }
    out = apply_strategic_merge_patch({"metadata": {"finalizers": ["a", "b"]}}, patch)
    assert out == {"metadata": {"finalizers": ["a", "c"]}}


def test_delete_from_missing_primitive_list_is_a_no_op() -> None:
    assert apply_strategic_merge_patch(
        {"metadata": {}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}
    ) == {"metadata": {}}


def test_node_pod_cidrs_merge_as_a_set() -> None:
    out = apply_strategic_merge_patch({"spec": {"podCIDRs": ["10.0.0.0/24"]}}, {"spec": {"podCIDRs": ["10.0.0.0/24"]}})
    assert out == {"spec": {"podCIDRs": ["10.0.0.0/24"]}}


# --- strategic merge patch: directives ------------------------------------------------------------------


def test_retain_keys_drops_unlisted_fields() -> None:
    # A volume switching source: apimachinery's retainKeys strategy on PodSpec.volumes.
    pod = {"spec": {"volumes": [{"name": "data", "emptyDir": {}}]}}
    patch = {"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/srv"}, "$retainKeys": ["hostPath", "name"]}]}}
    out = apply_strategic_merge_patch(pod, patch)
    assert out == {"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/srv"}}]}}


def test_retain_keys_refuses_unlisted_patch_fields() -> None:
    with pytest.raises(PatchError, match="invalid patch format of retainKeys"):
        apply_strategic_merge_patch({"spec": {}}, {"spec": {"a": 1, "$retainKeys": ["b"]}})


def test_retain_keys_must_be_a_list() -> None:
    with pytest.raises(PatchError, match=r"\$retainKeys must be a list"):
        apply_strategic_merge_patch({"spec": {}}, {"spec": {"$retainKeys": "a"}})


def test_patch_replace_on_a_map() -> None:
    out = apply_strategic_merge_patch(_pod(), {"metadata": {"labels": {"$patch": "replace", "only": "this"}}})
    assert out["metadata"]["labels"] == {"only": "this"}


def test_patch_delete_on_a_map() -> None:
    pod = _pod()
    pod["spec"]["securityContext"] = {"runAsUser": 1}
    out = apply_strategic_merge_patch(pod, {"spec": {"securityContext": {"$patch": "delete"}}})
    assert "securityContext" not in out["spec"]


def test_patch_delete_on_the_whole_object() -> None:
    assert apply_strategic_merge_patch(_pod(), {"$patch": "delete"}) == {}


def test_patch_merge_on_a_map_is_the_default() -> None:
    out = apply_strategic_merge_patch(_pod(), {"metadata": {"labels": {"$patch": "merge", "v": "2"}}})
    assert out["metadata"]["labels"] == {"app": "web", "tier": "front", "v": "2"}


def test_patch_replace_on_a_list() -> None:
    patch = {"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}
    out = apply_strategic_merge_patch(_pod(), patch)
    assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]


def test_patch_merge_as_list_element_is_refused_like_kubernetes() -> None:
    with pytest.raises(PatchError, match="merging lists cannot yet be specified"):
        apply_strategic_merge_patch(_pod(), {"spec": {"containers": [{"$patch": "merge"}]}})


@pytest.mark.parametrize(
    "patch",
    [
        {"metadata": {"labels": {"$patch": "bogus"}}},
        {"spec": {"containers": [{"name": "x", "$patch": "bogus"}]}},
    ],
)
def test_unknown_patch_type(patch: dict[str, Any]) -> None:
    with pytest.raises(PatchError, match="unknown patch type: bogus"):
        apply_strategic_merge_patch(_pod(), patch)


def test_directives_do_not_leak_into_new_fields() -> None:
    patch = {
        "spec": {
            "initContainers": [
                {"name": "a", "image": "x", "env": [{"name": "E", "$patch": "delete"}]},
                {"$patch": "replace"},
            ],
            "affinity": {"$patch": "replace", "nodeAffinity": {"x": None}},
            "tolerations": [{"$patch": "delete", "key": "a"}, {"key": "b"}],
            "$setElementOrder/volumes": [{"name": "v"}],
        },
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": ["f"],
            "finalizers": ["g"],
            "$retainKeys": ["finalizers", "name"],
        },
    }
    out = apply_strategic_merge_patch(_pod(), patch)
    assert _directives(out) == []
    assert out["spec"]["initContainers"] == [{"name": "a", "image": "x", "env": []}]
    assert out["spec"]["affinity"] == {"nodeAffinity": {}}
    assert out["spec"]["tolerations"] == [{"key": "b"}]
    assert out["metadata"] == {"name": "web", "finalizers": ["g"]}


@pytest.mark.parametrize("body", [[{"op": "add"}], "x", None])
def test_strategic_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(PatchError) as info:
        apply_strategic_merge_patch({}, body)
    assert info.value.bad_request


def test_strategic_merge_does_not_mutate_inputs() -> None:
    pod = _pod()
    patch = {
        "metadata": {"labels": None},
        "spec": {
            "$setElementOrder/containers": [{"name": "main"}],
            "containers": [
                {"name": "main", "ports": None, "env": [{"name": "Z", "value": "z"}]},
                {"$patch": "delete", "name": "side"},
            ],
        },
    }
    frozen = copy.deepcopy(patch)
    out = apply_strategic_merge_patch(pod, patch)
    assert pod == _pod()
    assert patch == frozen
    out["spec"]["containers"][0]["env"][0]["value"] = "changed"
    assert patch == frozen


def test_type_change_replaces_the_value() -> None:
    out = apply_strategic_merge_patch({"a": {"b": 1}, "c": [1]}, {"a": "s", "c": {"d": None, "e": 1}})
    assert out == {"a": "s", "c": {"e": 1}}


# --- merge keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key"),
    [
        (("spec", "containers"), "name"),
        (("spec", "initContainers"), "name"),
        (("spec", "ephemeralContainers"), "name"),
        (("spec", "volumes"), "name"),
        (("spec", "imagePullSecrets"), "name"),
        (("spec", "hostAliases"), "ip"),
        (("spec", "topologySpreadConstraints"), "topologyKey"),
        (("spec", "schedulingGates"), "name"),
        (("spec", "containers", "env"), "name"),
        (("spec", "initContainers", "volumeMounts"), "mountPath"),
        (("spec", "containers", "volumeDevices"), "devicePath"),
        (("spec", "containers", "ports"), "containerPort"),
        (("spec", "ephemeralContainers", "ports"), "containerPort"),
        (("spec", "template", "spec", "containers"), "name"),
        (("spec", "template", "spec", "containers", "env"), "name"),
        (("spec", "ports"), "port"),
        (("metadata", "ownerReferences"), "uid"),
        (("metadata", "finalizers"), PRIMITIVE_MERGE),
        (("spec", "podCIDRs"), PRIMITIVE_MERGE),
        (("status", "conditions"), "type"),
        (("status", "addresses"), "type"),
        (("status", "podIPs"), "ip"),
        (("secrets",), "name"),
        (("imagePullSecrets",), None),
        (("spec", "tolerations"), None),
        (("spec", "containers", "args"), None),
        (("spec", "containers", "envFrom"), None),
        (("spec", "finalizers"), None),
        (("status", "containerStatuses"), None),
        (("metadata", "managedFields"), None),
        ((), None),
        (("rules",), None),
    ],
)
def test_kubernetes_merge_key(path: tuple[str, ...], key: str | None) -> None:
    assert kubernetes_merge_key(path) == key


# --- properties -----------------------------------------------------------------------------------------

_KEYS = st.sampled_from(["a", "b", "c", "d"])
_SCALARS = st.one_of(st.booleans(), st.integers(-3, 3), st.text("xyz", max_size=2))


def _json(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
        max_leaves=12,
    )


_DOCS = st.dictionaries(_KEYS, _json(_SCALARS | st.none()), max_size=4)
_LIST_SAFE = _json(_SCALARS)  # no null anywhere: RFC 7386 keeps nulls inside lists, SMP drops them
_NO_NULL_PATCH = st.recursive(
    _SCALARS | st.lists(_LIST_SAFE, max_size=3),
    lambda inner: st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
)
_PATCHES = st.recursive(
    _SCALARS | st.none() | st.lists(_LIST_SAFE, max_size=3),
    lambda inner: st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=12,
).filter(lambda p: isinstance(p, dict))


def _leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    return [(path, value)]


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@given(_DOCS, _NO_NULL_PATCH.filter(lambda p: isinstance(p, dict)))
def test_merge_patch_without_nulls_sets_every_leaf(target: dict, patch: dict) -> None:
    out = apply_merge_patch(target, patch)
    for path, value in _leaves(patch):
        if isinstance(value, dict):  # an empty object merges nothing, but leaves an object there
            assert isinstance(_get(out, path), dict)
        else:
            assert _get(out, path) == value


@given(_DOCS, _PATCHES)
def test_merge_patch_is_idempotent(target: dict, patch: dict) -> None:
    once = apply_merge_patch(target, patch)
    assert apply_merge_patch(once, patch) == once


@given(_DOCS, _PATCHES)
def test_merge_patch_does_not_mutate(target: dict, patch: dict) -> None:
    before = copy.deepcopy((target, patch))
    apply_merge_patch(target, patch)
    assert (target, patch) == before


@given(_DOCS, _PATCHES)
def test_strategic_merge_without_merge_key_lists_equals_merge_patch(target: dict, patch: dict) -> None:
    # The field names a-d name no merge-key list, so every list is replaced whole.
    expected = apply_merge_patch(target, patch)
    assert apply_strategic_merge_patch(target, patch) == expected
    assert apply_strategic_merge_patch(target, patch, merge_key=lambda _: None) == expected


_NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
_CONTAINER_LISTS = st.lists(
    st.builds(lambda n, i: {"name": n, "image": i}, _NAMES, st.text("xy", max_size=2)),
    unique_by=lambda c: c["name"],
    max_size=4,
)


@st.composite
def _container_patches(draw: st.DrawFn) -> dict[str, Any]:
    updates = draw(_CONTAINER_LISTS)
    deleted = draw(
        st.lists(_NAMES, unique=True, max_size=2).filter(lambda d: not {c["name"] for c in updates} & set(d))
    )
    spec: dict[str, Any] = {"containers": updates + [{"$patch": "delete", "name": n} for n in deleted]}
    if draw(st.booleans()):
        spec["$setElementOrder/containers"] = [{"name": n} for n in draw(st.permutations(["a", "b", "c", "d", "e"]))]
    return {"spec": spec}


@settings(max_examples=200)
@given(_CONTAINER_LISTS, _container_patches())
def test_strategic_container_merge_properties(current: list[dict], patch: dict) -> None:
    out = apply_strategic_merge_patch({"spec": {"containers": current}}, patch)
    assert _directives(out) == []
    names = [c["name"] for c in out["spec"]["containers"]]
    updates = {c["name"]: c for c in patch["spec"]["containers"] if "$patch" not in c}
    deleted = {c["name"] for c in patch["spec"]["containers"] if "$patch" in c}
    assert len(names) == len(set(names))
    assert set(names) == ({c["name"] for c in current} - deleted) | set(updates)
    for container in out["spec"]["containers"]:
        if container["name"] in updates:
            assert container == updates[container["name"]]
    if "$setElementOrder/containers" in patch["spec"]:
        order = [o["name"] for o in patch["spec"]["$setElementOrder/containers"]]
        assert names == [n for n in order if n in names]
    # Applying the same patch again changes nothing.
    assert apply_strategic_merge_patch(out, patch) == out
