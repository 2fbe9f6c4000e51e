"""lockgate.cli.kubeyaml, the plugin's reader of kubeconfig YAML without PyYAML: on the
kubeconfigs real tools write it answers what yaml.safe_load answers; on anything else it
answers the same or declines (Unsupported, and the plugin asks PyYAML) — never a different
value, also on generated and on mangled documents."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lockgate.cli import kubeyaml
from lockgate.cli.kubeyaml import Unsupported

# As kubectl (client-go, Go's yaml) writes it: `kubectl config view --raw`.
KUBECTL = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUM=
    server: https://127.0.0.1:6443
  name: kind-kind
- cluster:
    insecure-skip-tls-verify: true
    server: https://[::1]:8443/prefix
    tls-server-name: kubernetes.default
  name: other
contexts:
- context:
    cluster: kind-kind
    namespace: prod
    user: kind-kind
  name: kind-kind
current-context: kind-kind
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t
    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ==
- name: ''
  user:
    token: '0123456789abcdef'
"""

# As `aws eks update-kubeconfig` writes it (PyYAML, block style, exec with flag arguments).
EKS = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://ABC123.gr7.us-west-2.eks.amazonaws.com
  name: arn:aws:eks:us-west-2:123456789012:cluster/shop
contexts:
- context:
    cluster: arn:aws:eks:us-west-2:123456789012:cluster/shop
    user: arn:aws:eks:us-west-2:123456789012:cluster/shop
  name: arn:aws:eks:us-west-2:123456789012:cluster/shop
current-context: arn:aws:eks:us-west-2:123456789012:cluster/shop
kind: Config
preferences: {}
users:
- name: arn:aws:eks:us-west-2:123456789012:cluster/shop
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      args:
      - --region
      - us-west-2
      - eks
      - get-token
      - --cluster-name
      - shop
      - --output
      - json
      command: aws
      env:
      - name: AWS_PROFILE
        value: "prod"
      interactiveMode: IfAvailable
      provideClusterInfo: false
"""

# As hack/cluster writes it (flow mapping), with comments, a document start, indented
# sequences and quoting by hand.
HAND = """\
---
# the local control plane
apiVersion: v1
kind: Config
clusters:
  - name: lockgate-local   # the only one
    cluster:
      server: https://127.0.0.1:6443
      certificate-authority: /root/.cache/lockgate/pki/ca.crt
users:
  - name: admin
    user:  # from hack/cluster's PKI
      # files relative to this one
      client-certificate: "pki/admin.crt"
      client-key: 'pki/it''s.key'
      token: "a\\tb\\u00e9\\x41 #not a comment"
contexts:
  - name: lockgate-local
    context: {cluster: lockgate-local, user: admin, namespace: "shop"}
  - name: empty
    context:
current-context: lockgate-local
extensions: []
list: [a, 'b', "c", 12, -3, true, null, ~, --flag]
"""


@pytest.mark.parametrize("text", [KUBECTL, EKS, HAND, HAND.replace("\n", "\r\n")])
def test_the_kubeconfigs_tools_write_are_read_as_pyyaml_reads_them(text: str) -> None:
    assert kubeyaml.load(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",  # anchors, aliases
        "a: !!str 1\n",  # tags
        "a: |\n  text\n",  # block scalars
        "a: >\n  text\n",
        "a: one\n  two\n",  # a plain scalar continued
        'a: "one\n  two"\n',  # a quoted scalar continued
        "a: {b: 1,\n  c: 2}\n",  # multi-line flow
        "a:\n\tb: 1\n",  # tabs
        "a: 1.5\n",  # floats, timestamps, octal, sexagesimal
        "a: 2026-12-02\n",
        "a: 0777\n",
        "a: 1:30\n",
        "a: 1_000\n",
        "<<: {a: 1}\n",  # merge keys
        "a: 1\n---\nb: 2\n",  # several documents
        "%YAML 1.1\n---\na: 1\n",  # directives
        "? a\n: 1\n",  # complex keys
        "1: a\n",  # keys that are not strings
        "yes: a\n",
        "a: b: c\n",  # malformed
        "a:\n  b: 1\n c: 2\n",
        "- a\nb: 1\n",
    ],
)
def test_what_leaves_the_subset_is_left_to_pyyaml(text: str) -> None:
    with pytest.raises(Unsupported):
        kubeyaml.load(text)


def test_scalars_resolve_as_pyyaml_resolves_them() -> None:
    words = ["yes", "No", "ON", "off", "true", "FALSE", "null", "~", "Null", "0", "-0", "+7"]
    words += ["y", "n", "nul", "truth", "--x", "+x", "arn:aws:x", "a#b", "x:y", "é"]
    for word in words:
        text = f"k: {word}\n"
        assert kubeyaml.load(text) == yaml.safe_load(text), word


# ---------------------------------------------------------------- generated documents

KEY = st.text(alphabet="abcz-_./:019 #'\"", min_size=1, max_size=10)
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False),
    st.text(alphabet="abyYnNoOtTfF019-+.:#&*!|>'\"{}[],%@` =~<\\é\u2028", max_size=12),
    st.sampled_from(["yes", "no", "null", "~", "on", "True", "0o7", "1e3", ".inf", "-", "--"]),
)
DOC = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(KEY, inner, max_size=4),
    ),
    max_leaves=20,
)
STYLE = st.fixed_dictionaries(
    {
        "default_flow_style": st.sampled_from([False, False, False, None, True]),
        "width": st.sampled_from([20, 80, 4096]),
        "indent": st.sampled_from([2, 4]),
        "allow_unicode": st.booleans(),
        "explicit_start": st.booleans(),
    }
)


def _same_or_declined(text: str) -> Any:
    """kubeyaml's answer, which must be PyYAML's; None when it declined."""
    try:
        ours = kubeyaml.load(text)
    except Unsupported:
        return None
    assert ours == yaml.safe_load(text), text
    return ours


@given(DOC.filter(lambda d: isinstance(d, dict)), STYLE)
def test_generated_documents_read_as_pyyaml_reads_them_or_not_at_all(
    doc: dict[str, Any], style: dict[str, Any]
) -> None:
    _same_or_declined(yaml.safe_dump(doc, **style))


NAME = st.from_regex(r"[a-z][a-z0-9.:/-]{0,20}", fullmatch=True)
KUBECONFIG = st.fixed_dictionaries(
    {
        "apiVersion": st.just("v1"),
        "kind": st.just("Config"),
        "current-context": NAME,
        "clusters": st.lists(
            st.fixed_dictionaries(
                {
                    "name": NAME,
                    "cluster": st.fixed_dictionaries(
                        {"server": NAME, "insecure-skip-tls-verify": st.booleans()}
                    ),
                }
            ),
            max_size=3,
        ),
        "users": st.lists(
            st.fixed_dictionaries(
                {
                    "name": NAME,
                    "user": st.fixed_dictionaries({"token": NAME, "args": st.lists(NAME)}),
                }
            ),
            max_size=3,
        ),
    }
)


@given(KUBECONFIG, st.sampled_from([2, 4]), st.booleans())
def test_kubeconfig_shaped_documents_are_read_without_pyyaml(
    config: dict[str, Any], indent: int, start: bool
) -> None:
    """The subset is not so small that the plugin falls back on ordinary kubeconfigs."""
    text = yaml.safe_dump(config, default_flow_style=False, indent=indent, explicit_start=start)
    assert kubeyaml.load(text) == yaml.safe_load(text) == config


EDITS = " :-#\"'\n{}[],a1&*!|>?%\\"


@given(
    KUBECONFIG,
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(["insert", "delete", "replace"]),
            st.sampled_from(list(EDITS)),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mangled_kubeconfigs_read_as_pyyaml_reads_them_or_not_at_all(
    config: dict[str, Any], edits: list[tuple[int, str, str]]
) -> None:
    text = yaml.safe_dump(config, default_flow_style=False)
    for position, edit, char in edits:
        at = position % (len(text) + 1)
        if edit == "insert":
            text = text[:at] + char + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + char + text[at + 1 :]
    try:
        ours = kubeyaml.load(text)
    except Unsupported:
        return
    try:
        theirs = yaml.safe_load(text)
    except yaml.YAMLError:
        pytest.fail(f"kubeyaml read {ours!r} where PyYAML refuses:\n{text}")
    assert ours == theirs, text
