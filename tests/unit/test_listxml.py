"""listxml.py reads a LIST answer as the SDK's own parser does, minus what a listing never uses."""

from __future__ import annotations

import pytest
from obs.convertor import Adapter, Convertor  # type: ignore[import-untyped]

from obsfs.backend.listxml import ListingUnreadable, parse_listing

PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>d/</Prefix><Marker></Marker><MaxKeys>3</MaxKeys><Delimiter>/</Delimiter>
  <IsTruncated>{truncated}</IsTruncated>{next}
  <Contents><Key>d/a &amp; &lt;b&gt; é</Key><LastModified>2026-12-07T03:55:12.987Z</LastModified>
    <ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>16</Size>
    <Owner><ID>o</ID><DisplayName>o</DisplayName></Owner><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>d/c</Key><LastModified>2001-09-09T01:46:40.000Z</LastModified>
    <ETag>"abc-2"</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>d/b/</Prefix></CommonPrefixes>
  <CommonPrefixes><Prefix>d/z/</Prefix></CommonPrefixes>
</ListBucketResult>"""


def test_a_page_is_read_as_the_sdk_reads_it() -> None:
    xml = PAGE.format(truncated="false", next="")
    page = parse_listing(xml)
    assert [(o.key, o.size, o.etag, o.last_modified) for o in page.objects] == [
        ("d/a & <b> é", 16, "0cc175b9c0f1b6a831c399e269772661", 1796615712.0), ("d/c", 0, "abc-2", 1e9)]
    assert page.prefixes == ["d/b/", "d/z/"] and page.next_marker is None
    sdk = Convertor("v2", Adapter("v2")).parseListObjects(xml.replace(' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"',
                                                                      ""), {})
    assert [(c.key, c.size, c.etag.strip('"')) for c in sdk.contents] == [(o.key, o.size, o.etag) for o in page.objects]
    assert [p.prefix for p in sdk.commonPrefixs] == page.prefixes


def test_where_a_truncated_page_goes_on() -> None:
    assert parse_listing(PAGE.format(truncated="true", next="<NextMarker>tok</NextMarker>")).next_marker == "tok"
    # No NextMarker: after the last item, which here is a common prefix, not the last key.
    assert parse_listing(PAGE.format(truncated="true", next="")).next_marker == "d/z/"


def test_url_encoded_names_are_decoded() -> None:
    xml = ("<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
           "<Contents><Key>d/a+b%2Fc%C3%A9</Key><Size>1</Size><ETag>e</ETag></Contents>"
           "<CommonPrefixes><Prefix>d/x%20y/</Prefix></CommonPrefixes></ListBucketResult>")
    page = parse_listing(xml)
    assert [o.key for o in page.objects] == ["d/a b/cé"] and page.prefixes == ["d/x y/"]
    assert page.objects[0].last_modified == 0.0  # no time given


@pytest.mark.parametrize("body", ["", "<html>busy</html>", "<ListBucketResult><Contents>"])
def test_an_answer_that_is_no_listing_is_an_error(body: str) -> None:
    with pytest.raises(ListingUnreadable):
        parse_listing(body)
