"""Byte ranges and signed links, without a server."""

from __future__ import annotations

import pytest

from reelgen.service.delivery import ByteRange, LinkSigner, RangeNotSatisfiable, SignatureError, parse_range
from tests.service.helpers import FakeClock


@pytest.mark.parametrize(("header", "expected"), [
    (None, None),
    ("bytes=0-9", ByteRange(0, 9)),
    ("bytes=10-", ByteRange(10, 99)),
    ("bytes=-10", ByteRange(90, 99)),
    ("bytes=-500", ByteRange(0, 99)),  # a suffix longer than the file is the whole file
    ("bytes=50-500", ByteRange(50, 99)),  # an end past the file is clipped
    ("bytes=99-99", ByteRange(99, 99)),
    # ignorable: the whole file instead of an error (RFC 9110 section 14.2)
    ("bytes=0-1,5-9", None),
    ("items=0-9", None),
    ("bytes=9-0", None),
    ("bytes=abc", None),
    ("bytes=--5", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=500-600", "bytes=-0"])
def test_ranges_past_the_end_are_not_satisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_a_signed_link_is_valid_for_its_file_until_it_expires():
    clock = FakeClock(1000)
    signer = LinkSigner("secret", clock)
    signature = signer.sign("video_1", "video", 1060)
    signer.verify("video_1", "video", 1060, signature)
    for video_id, variant, expires in [("video_2", "video", 1060), ("video_1", "thumbnail", 1060),
                                       ("video_1", "video", 1061)]:
        with pytest.raises(SignatureError, match="does not match"):
            signer.verify(video_id, variant, expires, signature)
    with pytest.raises(SignatureError, match="does not match"):
        LinkSigner("other secret", clock).verify("video_1", "video", 1060, signature)
    clock.now = 1061
    with pytest.raises(SignatureError, match="expired"):
        signer.verify("video_1", "video", 1060, signature)
