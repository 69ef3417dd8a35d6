"""deletexml.py writes the multi-object delete the SDK writes, and reads which keys were not deleted."""

from __future__ import annotations

import pytest
from obs.convertor import Convertor  # type: ignore[import-untyped]

from obsfs.backend.deletexml import DeleteAnswerUnreadable, delete_body, delete_failures

KEYS = ["d/a & <b> é", "d/c\"'", "plain"]


def test_the_body_is_the_sdks() -> None:
    sdk = Convertor("v2").trans_delete_objects_request({"quiet": False, "objects": [{"key": k} for k in KEYS]})
    assert delete_body(KEYS) == sdk


def test_failures_are_read_with_or_without_a_namespace() -> None:
    answer = """<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Deleted><Key>plain</Key></Deleted>
  <Error><Key>d/a &amp; &lt;b&gt; é</Key><Code>AccessDenied</Code><Message>no</Message></Error>
  <Error><Key>gone</Key><Code>NoSuchKey</Code><Message>-</Message></Error>
</DeleteResult>"""
    expected = [("d/a & <b> é", "AccessDenied"), ("gone", "NoSuchKey")]
    assert delete_failures(answer.encode()) == expected
    bare = answer.replace(' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', "")
    assert delete_failures(bare.encode()) == expected
    assert delete_failures(b"<DeleteResult><Deleted><Key>k</Key></Deleted></DeleteResult>") == []


@pytest.mark.parametrize("body", [b"", b"<html>busy</html>", b"<DeleteResult><Error>"])
def test_an_answer_that_is_no_delete_result_is_an_error(body: bytes) -> None:
    with pytest.raises(DeleteAnswerUnreadable):
        delete_failures(body)
