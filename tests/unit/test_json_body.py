"""The API's one JSON decoder (plugvm.api.json_body): what cloud-hypervisor's serde refuses."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from plugvm.api.json_body import MAX_DEPTH, BodyError, decode


@pytest.mark.parametrize("raw, why", [
    (b"[" * 10000, "more than 64 deep"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "more than 64 deep"),
    (b'{"path": "/a", "path": "/b"}', "duplicate field 'path'"),
    (b'{"serial": "\\ud800"}', "lone surrogate"),
    (b'["\\udfff x"]', "lone surrogate"),
    (b'\xef\xbb\xbf{"a": 1}', "byte-order mark"),
    ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
    (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),
    (b'{"a": ', "Expecting value"),
])
def test_refused_bodies_say_why(raw, why):
    with pytest.raises(BodyError, match=why):
        decode(raw)


def test_what_serde_takes_decodes_as_json_does():
    raw = '{"payload": {"kernel": "/k", "cmdline": "console=ttyS0 é"}, "cpus": {"boot_vcpus": 2}, "x": [[1], []]}'
    assert decode(raw.encode()) == json.loads(raw)
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert decode(deep) == json.loads(deep)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children) | st.dictionaries(st.text(), children), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()))
def test_any_bytes_decode_or_raise_body_error_only(raw):
    try:
        decode(raw)
    except BodyError as e:
        assert "\n" not in str(e)
