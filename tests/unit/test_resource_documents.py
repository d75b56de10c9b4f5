"""resources.documents without etcd: resource files as calicoctl reads them (YAML or JSON, several
documents, a top-level array, a typed list; `kind: List` refused), stdin, directories and -R,
YAML errors with their line, every document decoded strictly (one bad document fails the load and
names its file and document), and timestamps kept as the strings they were."""

from __future__ import annotations

import io
import json

import pytest

from calico_cni.resources import documents
from calico_cni.resources.errors import BadDocument

API = "projectcalico.org/v3"


def pool(name: str, cidr: str, **spec) -> dict:
    return {"apiVersion": API, "kind": "IPPool", "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}}


POOL_A = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 198.18.0.0/24
"""

POOL_B = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-b
spec:
  cidr: 198.18.1.0/24
  natOutgoing: true
"""


def names(docs) -> list[str]:
    return [d.doc["metadata"]["name"] for d in docs]


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_one_yaml_document_is_decoded_with_defaults(tmp_path):
    (doc,) = documents.load([write(tmp_path / "p.yaml", POOL_A)])
    assert doc.kind.name == "IPPool" and doc.source.endswith("p.yaml")
    assert doc.doc["spec"] == {
        "cidr": "198.18.0.0/24", "blockSize": 26, "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic", "ipipMode": "Never", "vxlanMode": "Never",
    }
    assert doc.resource_version is None


def test_several_yaml_documents_keep_file_order_and_their_number(tmp_path):
    path = write(tmp_path / "p.yaml", POOL_B + "---\n" + POOL_A + "---\n")
    docs = documents.load([path])
    assert names(docs) == ["pool-b", "pool-a"]
    assert [d.source for d in docs] == [f"{path}, document 1", f"{path}, document 2"]


def test_empty_documents_between_separators_are_ignored(tmp_path):
    docs = documents.load([write(tmp_path / "p.yaml", "---\n" + POOL_A + "---\n---\n" + POOL_B)])
    assert names(docs) == ["pool-a", "pool-b"]


def test_a_json_file(tmp_path):
    (doc,) = documents.load([write(tmp_path / "p.json", json.dumps(pool("j", "198.18.2.0/24")))])
    assert doc.doc["metadata"]["name"] == "j" and doc.doc["spec"]["blockSize"] == 26


def test_a_top_level_array_in_json_and_in_yaml(tmp_path):
    arr = [pool("a1", "198.18.0.0/24"), pool("a2", "198.18.1.0/24")]
    path = write(tmp_path / "arr.json", json.dumps(arr))
    docs = documents.load([path])
    assert names(docs) == ["a1", "a2"]
    assert [d.source for d in docs] == [f"{path}, item 1", f"{path}, item 2"]
    yaml_arr = "- " + POOL_A.replace("\n", "\n  ").rstrip() + "\n- " + POOL_B.replace("\n", "\n  ").rstrip() + "\n"
    assert names(documents.load([write(tmp_path / "arr.yaml", yaml_arr)])) == ["pool-a", "pool-b"]


def test_a_typed_list_with_and_without_kinds_on_its_items(tmp_path):
    items = [pool("l1", "198.18.0.0/24"), {"metadata": {"name": "l2"}, "spec": {"cidr": "198.18.1.0/24"}}]
    data = {"apiVersion": API, "kind": "IPPoolList", "metadata": {"resourceVersion": "5"}, "items": items}
    path = write(tmp_path / "list.json", json.dumps(data))
    docs = documents.load([path])
    assert names(docs) == ["l1", "l2"] and {d.kind.name for d in docs} == {"IPPool"}
    assert [d.source for d in docs] == [f"{path}, item 1", f"{path}, item 2"]


def test_an_empty_typed_list_is_no_resources(tmp_path):
    with pytest.raises(BadDocument, match="no resources found"):
        documents.load([write(tmp_path / "l.yaml", f"apiVersion: {API}\nkind: IPPoolList\nitems: []\n")])


def test_a_generic_list_is_refused(tmp_path):
    data = {"apiVersion": "v1", "kind": "List", "items": [pool("x", "198.18.0.0/24")]}
    with pytest.raises(BadDocument, match="kind 'List' is not a Calico v3 resource"):
        documents.load([write(tmp_path / "l.json", json.dumps(data))])


def test_an_unknown_typed_list_is_refused(tmp_path):
    with pytest.raises(BadDocument, match="unknown list kind 'FooList'"):
        documents.load([write(tmp_path / "l.yaml", f"apiVersion: {API}\nkind: FooList\nitems: []\n")])


def test_items_of_a_typed_list_must_be_a_list(tmp_path):
    with pytest.raises(BadDocument, match="items of IPPoolList must be a list"):
        documents.load([write(tmp_path / "l.yaml", f"apiVersion: {API}\nkind: IPPoolList\nitems: {{a: 1}}\n")])


def test_stdin_is_dash():
    docs = documents.load(["-"], stdin=io.StringIO(POOL_A + "---\n" + POOL_B))
    assert names(docs) == ["pool-a", "pool-b"]
    assert docs[0].source == "stdin, document 1"


def test_stdin_and_files_together_in_argument_order(tmp_path):
    path = write(tmp_path / "b.yaml", POOL_B)
    assert names(documents.load([path, "-"], stdin=io.StringIO(POOL_A))) == ["pool-b", "pool-a"]


def test_a_directory_gives_its_resource_files_in_name_order_and_ignores_others(tmp_path):
    write(tmp_path / "2.yml", POOL_B)
    write(tmp_path / "1.yaml", POOL_A)
    write(tmp_path / "3.json", json.dumps(pool("c", "198.18.2.0/24")))
    write(tmp_path / "notes.txt", "not a resource: {")
    sub = tmp_path / "sub"
    sub.mkdir()
    write(sub / "d.yaml", POOL_A.replace("pool-a", "deep").replace("198.18.0.0", "198.18.9.0"))
    assert names(documents.load([str(tmp_path)])) == ["pool-a", "pool-b", "c"]
    assert names(documents.load([str(tmp_path)], recursive=True)) == ["pool-a", "pool-b", "c", "deep"]


def test_recursion_reaches_every_depth(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    write(deep / "p.yaml", POOL_A)
    with pytest.raises(BadDocument, match="pass -R"):
        documents.load([str(tmp_path)])
    assert names(documents.load([str(tmp_path)], recursive=True)) == ["pool-a"]


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(BadDocument, match=r"holds no \.yaml, \.yml or \.json file"):
        documents.load([str(tmp_path)], recursive=True)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(BadDocument, match="cannot read .*nope.yaml: no such file or directory"):
        documents.load([str(tmp_path / "nope.yaml")])


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(BadDocument, match="cannot read .*p.yaml"):
        documents.load([str(path)])


def test_a_yaml_error_names_the_file_line_and_column(tmp_path):
    text = POOL_A + "  bad: [unclosed\n"
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(BadDocument) as err:
        documents.load([path])
    msg = str(err.value)
    assert msg.startswith(f"{path} is not valid YAML or JSON at line ")
    assert "at line 8" in msg or "at line 7" in msg, msg


def test_a_yaml_error_in_a_later_document_gives_its_line_in_the_file(tmp_path):
    text = POOL_A + "---\n" + POOL_B + "  : : :\n  - x\n"
    path = write(tmp_path / "p.yaml", text)
    with pytest.raises(BadDocument, match=r"is not valid YAML or JSON at line (1[4-7]),"):
        documents.load([path])


def test_broken_json_is_reported_through_the_yaml_parser_with_a_line(tmp_path):
    path = write(tmp_path / "p.json", '{\n  "kind": "IPPool",\n  "metadata": {"name": "x"\n}\n')
    with pytest.raises(BadDocument, match=r"p.json is not valid YAML or JSON at line \d+, column \d+"):
        documents.load([path])


def test_json_flow_style_yaml_is_accepted(tmp_path):
    # Not JSON (unquoted keys) but valid YAML flow style.
    text = "{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: f}, spec: {cidr: 198.18.0.0/24}}"
    assert names(documents.load([write(tmp_path / "p.yaml", text)])) == ["f"]


def test_a_bad_document_names_file_document_kind_name_field_and_rule(tmp_path):
    bad = POOL_B.replace("natOutgoing: true", "natOutgoin: true")
    path = write(tmp_path / "p.yaml", POOL_A + "---\n" + bad)
    with pytest.raises(BadDocument) as err:
        documents.load([path])
    assert str(err.value) == f"{path}, document 2 (IPPool pool-b): spec.natOutgoin: unknown field"


def test_a_bad_item_of_an_array_names_the_item(tmp_path):
    arr = [pool("a1", "198.18.0.0/24"), pool("a2", "198.18.1.0/24", ipipMode="Always", vxlanMode="Always")]
    path = write(tmp_path / "arr.json", json.dumps(arr))
    with pytest.raises(BadDocument, match=r"arr.json, item 2 \(IPPool a2\): spec.vxlanMode: Cannot enable both VXLAN and IPIP"):
        documents.load([path])


@pytest.mark.parametrize(
    "data, needle",
    [
        ("just a string", "a resource must be an object"),
        ({"apiVersion": API, "metadata": {"name": "x"}}, "kind: required field is missing"),
        ({"apiVersion": API, "kind": "IPPoool", "metadata": {"name": "x"}}, "kind: unknown resource kind 'IPPoool'"),
        ({"apiVersion": "projectcalico.org/v2", "kind": "IPPool", "metadata": {"name": "x"}, "spec": {"cidr": "198.18.0.0/24"}}, "apiVersion: expected projectcalico.org/v3"),
        ({"apiVersion": API, "kind": "IPPool", "metadata": {}, "spec": {"cidr": "198.18.0.0/24"}}, "metadata.name: required field is missing"),
        ({"apiVersion": API, "kind": "IPPool", "metadata": {"name": "x"}}, "spec: required field is missing"),
        ({"apiVersion": API, "kind": "IPPool", "metadata": {"name": "x"}, "spec": {"cidr": "198.18.0.0/24"}, "extra": 1}, "extra: unknown field"),
        ({"apiVersion": API, "kind": "IPPool", "metadata": {"name": "x", "namespace": "ns"}, "spec": {"cidr": "198.18.0.0/24"}}, "metadata.namespace: IPPool is not namespaced"),
        ({"apiVersion": API, "kind": "IPPool", "metadata": {"name": "Bad_Name"}, "spec": {"cidr": "198.18.0.0/24"}}, "metadata.name:"),
    ],
)
def test_document_shapes_refused(tmp_path, data, needle):
    path = write(tmp_path / "d.json", json.dumps(data))
    with pytest.raises(BadDocument) as err:
        documents.load([path])
    assert needle in str(err.value) and str(err.value).startswith(path)


def test_timestamps_stay_strings_as_written(tmp_path):
    text = POOL_A.replace("  name: pool-a\n", "  name: pool-a\n  creationTimestamp: 2024-01-02T03:04:05Z\n  uid: 7a3c\n")
    (doc,) = documents.load([write(tmp_path / "p.yaml", text)])
    assert doc.doc["metadata"]["creationTimestamp"] == "2024-01-02T03:04:05Z"
    assert doc.doc["metadata"]["uid"] == "7a3c"
    # A date-looking label value is also kept as the string it is.
    text = POOL_A.replace("  name: pool-a\n", "  name: pool-a\n  annotations:\n    when: 2024-01-02\n")
    (doc,) = documents.load([write(tmp_path / "q.yaml", text)])
    assert doc.doc["metadata"]["annotations"] == {"when": "2024-01-02"}


def test_resource_version_is_kept_from_the_file(tmp_path):
    text = POOL_A.replace("  name: pool-a\n", "  name: pool-a\n  resourceVersion: '42'\n")
    (doc,) = documents.load([write(tmp_path / "p.yaml", text)])
    assert doc.resource_version == "42"


def test_namespace_is_given_to_namespaced_documents_without_one(tmp_path):
    netset = {"apiVersion": API, "kind": "NetworkSet", "metadata": {"name": "s"}, "spec": {"nets": ["198.51.100.0/28"]}}
    path = write(tmp_path / "s.json", json.dumps(netset))
    assert documents.load([path], namespace="team")[0].doc["metadata"]["namespace"] == "team"
    assert documents.load([path])[0].doc["metadata"]["namespace"] == "default"


def test_dash_n_with_a_global_resource_is_refused_as_calicoctl_does(tmp_path):
    path = write(tmp_path / "p.json", json.dumps(pool("p", "198.18.0.0/24")))
    with pytest.raises(BadDocument, match=r"p.json \(IPPool p\): -n team: IPPool is not namespaced"):
        documents.load([path], namespace="team")


def test_a_namespace_differing_from_dash_n_is_refused(tmp_path):
    netset = {"apiVersion": API, "kind": "NetworkSet", "metadata": {"name": "s", "namespace": "other"}, "spec": {}}
    path = write(tmp_path / "s.json", json.dumps(netset))
    with pytest.raises(BadDocument, match="metadata.namespace 'other' differs from -n team"):
        documents.load([path], namespace="team")


def test_an_empty_file_has_no_resources(tmp_path):
    with pytest.raises(BadDocument, match="no resources found in the input"):
        documents.load([write(tmp_path / "e.yaml", "---\n# nothing\n")])


def test_describe():
    assert documents.describe("f.yaml, document 2", pool("p1", "x")) == "f.yaml, document 2 (IPPool p1)"
    assert documents.describe("f.yaml", {"kind": "IPPool"}) == "f.yaml (IPPool)"
    assert documents.describe("f.yaml", [1]) == "f.yaml"
