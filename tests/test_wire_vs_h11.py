"""The stand-in's hand-written request parser, held to h11 on random byte streams.

:func:`topchef_worker.testing._http.parse_message` (what the server reads a request
with) and a server-side ``h11.Connection`` get the same bytes, built from plausible
and implausible request pieces, and must agree on whether they are a request, need
more bytes, or are invalid; and, for a request, on method, target, headers, body and
where the request ends (where a next one would start: the smuggling question).

Where the stand-in deliberately differs from h11, the case is excluded narrowly, and
only after checking that the stand-in refuses it:

* versions other than HTTP/1.0 and 1.1 (h11 takes any ``HTTP/d.d``, so HTTP/2's
  preface ``PRI * HTTP/2.0``): refused, 400;
* both ``Content-Length`` and ``Transfer-Encoding`` (h11 lets chunked win): refused,
  since that is the classic smuggling vector;
* obs-fold (h11 unfolds it): refused, as RFC 9112 allows;
* an HTTP/1.1 request without ``Host`` (h11 refuses it): accepted, as Werkzeug does.

h11 lower-cases a ``Transfer-Encoding`` value; the comparison does too.
"""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from topchef_worker.testing._http import HttpError, Limits, parse_message

LIMITS = Limits(max_body=1 << 30, max_head=1 << 20, max_header_lines=10_000)

settings.register_profile(
    "wire", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

METHODS = [b"GET", b"POST", b"PATCH", b"HEAD", b"OPTIONS", b"M-SEARCH", b"get", b"G(T", b""]
TARGETS = [b"/", b"/services", b"/jobs/1?x=%20", b"*", b"http://h/x", b"/%ff", b"/a b", b"/\xff"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1", b""]
NAMES = [b"Connection", b"X-A", b"x-a", b"Content-Type"]
ODD_NAMES = [b"Content-Length", b"Transfer-Encoding", b"Host", b"Bad Name", b"", b"X\x00", b"X-A "]
LONG_LENGTHS = [b"9" * 20, b"9" * 21]  # the most digits h11 takes, and one more
VALUES = {
    b"Content-Length": [b"0", b"3", b"5", b"-1", b"+3", b"3, 3", b"3,4", b"003", b"1e3", b" 3 "],
    b"Transfer-Encoding": [b"chunked", b"Chunked", b"gzip", b"chunked, gzip", b"gzip, chunked"],
    b"Connection": [b"close", b"keep-alive", b"Keep-Alive, Upgrade"],
}
ODD_VALUES = [b"", b"a b", b"a\tb", b" v ", b"\xe9\xff", b"a\x01b", b"a\rb", b"a\x00b", b"\x7f"]


def mostly(good: list[bytes], odd: list[bytes], *, also: int = 0) -> st.SearchStrategy[bytes]:
    """Mostly a plausible piece, now and then an odd one (or *also* random bytes)."""
    choices = st.sampled_from(good * 12 + odd)
    return choices | st.binary(min_size=1, max_size=also) if also else choices


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    name = draw(mostly(NAMES, ODD_NAMES))
    odd = ODD_VALUES + LONG_LENGTHS if name == b"Content-Length" else ODD_VALUES
    value = draw(mostly(VALUES.get(name, [b"v", b"a b", b"x;q=1"]), odd))
    separator = draw(mostly([b": ", b":"], [b":\t", b" : ", b""]))
    fold = draw(mostly([b""], [b" ", b"\t"]))
    return fold + name + separator + value


def chunked(body: bytes, sizes: list[int], tail: bytes) -> bytes:
    out, at = [], 0
    for size in sizes:
        piece = body[at : at + size]
        at += size
        if piece:
            out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    out.append(b"%x\r\n%s\r\n" % (len(body[at:]), body[at:]) if body[at:] else b"")
    return b"".join(out) + b"0\r\n" + tail


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    eol = draw(mostly([b"\r\n"], [b"\n"]))
    space = draw(mostly([b" "], [b"  ", b"\t"]))
    line = space.join(
        [
            draw(mostly(METHODS[:6], METHODS[6:], also=4)),
            draw(mostly(TARGETS[:5], TARGETS[5:], also=6)),
            draw(mostly(VERSIONS[:2], VERSIONS[2:])),
        ]
    )
    headers = draw(st.lists(header_lines(), max_size=4))
    if draw(mostly([b"yes"], [b""])):
        headers.insert(0, b"Host: example")
    body = draw(st.binary(max_size=20))
    framing = draw(st.sampled_from(["length", "chunked", "raw", "none"]))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        tail = draw(st.sampled_from([b"\r\n", b"\n", b"X-T: 1\r\n\r\n", b"bad\r\n\r\n", b""]))
        sizes = draw(st.lists(st.integers(1, 8), max_size=3))
        body = draw(st.just(chunked(body, sizes, tail)) | st.binary(max_size=12))
    head = eol.join([line, *headers]) + eol + eol
    rest = draw(st.sampled_from([b"", b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"]))
    cut = draw(st.none() | st.none() | st.integers(0, 200))
    data = head + body + rest
    return data if cut is None else data[:cut]


def ours(data: bytes) -> tuple[Any, ...]:
    try:
        message = parse_message(data, LIMITS)
    except HttpError as error:
        return ("invalid", error.reason)
    if message is None:
        return ("incomplete",)
    head = message.head
    headers = dict(head.headers)
    if "transfer-encoding" in headers:
        headers["transfer-encoding"] = headers["transfer-encoding"].lower()
    version = head.version.encode()
    return ("valid", head.method, head.target, version, headers, message.body, message.consumed)


def _h11_headers(request: h11.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key, text = name.decode("ascii"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def theirs(data: bytes) -> tuple[tuple[Any, ...], h11.Request | None]:
    """h11's verdict, and the request head it parsed, if it got that far."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    if data:  # b"" would tell h11 the connection closed
        connection.receive_data(data)
    request: h11.Request | None = None
    body = b""
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                return ("incomplete",), request
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(f"unexpected h11 event {event!r}")
    except h11.RemoteProtocolError as error:
        return ("invalid", str(error)), request
    assert request is not None
    consumed = len(data) - len(connection.trailing_data[0])
    method, target = request.method.decode(), request.target.decode()
    headers = _h11_headers(request)
    return ("valid", method, target, request.http_version, headers, body, consumed), request


DELIBERATE = {
    "unsupported HTTP version",
    "both Content-Length and Transfer-Encoding",
    "obsolete line folding",
}


def _deliberately_different(
    data: bytes, mine: tuple[Any, ...], h11s: tuple[Any, ...], request: h11.Request | None
) -> bool:
    """The documented differences (module docstring); asserts the stand-in's side."""
    if request is not None:
        headers = _h11_headers(request)
        if request.http_version not in (b"1.0", b"1.1"):
            assert mine == ("invalid", "unsupported HTTP version"), mine
            return True
        if "content-length" in headers and "transfer-encoding" in headers:
            assert mine == ("invalid", "both Content-Length and Transfer-Encoding"), mine
            return True
        if mine == ("invalid", "obsolete line folding"):
            return b"\n " in data or b"\n\t" in data
    if h11s[0] == "invalid" and "Missing mandatory Host" in h11s[1]:
        # Ours takes it, or refuses it for one of the other deliberate reasons.
        assert mine[0] in ("valid", "incomplete") or mine[1] in DELIBERATE, mine
        return True
    return False


@settings.get_profile("wire")
@given(streams())
@example(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n")
@example(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\nContent-Length: 1\r\n\r\nx")
def test_the_parser_agrees_with_h11(data: bytes) -> None:
    mine, (h11s, request) = ours(data), theirs(data)
    if _deliberately_different(data, mine, h11s, request):
        return
    if mine[0] == "invalid" or h11s[0] == "invalid":
        assert mine[0] == h11s[0], (mine, h11s)
    else:
        assert mine == h11s
