"""How the stand-in server reads an HTTP/1.1 request: pure functions on bytes.

The parser is hand-written because the server's cost per request is the budget every
benchmark and test pays (http.server goes through the email package and cost half of
the server's time); it is kept pure, bytes in and a request or an :class:`HttpError`
out, so that ``tests/test_wire_vs_h11.py`` can hold it to h11 on random streams.

It is strict where leniency would let a request mean two things: a request line or
header that is not RFC 9112's grammar, a ``Content-Length`` that is not digits or
disagrees with another, a ``Transfer-Encoding`` other than ``chunked``, both framing
headers at once, obs-fold, a version other than HTTP/1.0 or HTTP/1.1 (which includes
HTTP/2's preface).  Each is a 400 and the connection is closed, so nothing after an
ambiguous request is ever read as another request (no smuggling).  Limits answer 413
(body), 414 (request line) and 431 (header section).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import attrs

__all__ = [
    "Head",
    "HttpError",
    "Limits",
    "Message",
    "chunk_size",
    "decode_target",
    "find_head_end",
    "find_trailers_end",
    "parse_head",
    "parse_message",
]

# RFC 9112's grammar, as h11 spells it (h11/_abnf.py), so the two can be compared.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_VALUE = rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?"
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(" + _VALUE + rb")[ \t]*")
#: A whole header block at once, each line ending with its LF: one regex call instead
#: of one a line keeps the parser at the speed of the old, lenient one.
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[ \t]*" + _VALUE + rb"[ \t]*\r?\n)*")
_ANY_VERSION = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/[0-9]\.[0-9]")
_DIGITS = re.compile(rb"[0-9]{1,20}")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")
#: The end of a request's head: a blank line, after CRLF or bare LF line ends.
_HEAD_END = re.compile(rb"\n\r?\n")


class HttpError(Exception):
    """A request the server refuses before the app sees it; the connection then closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@attrs.frozen
class Limits:
    """What one request may hold; beyond it the server answers 413, 414 or 431."""

    max_body: int = 10 * 1024 * 1024
    max_head: int = 64 * 1024
    max_header_lines: int = 100


@attrs.frozen
class Head:
    """A parsed request line and header section.

    Header names are lower case; repeated headers are joined with ``", "`` as WSGI
    does (a repeated ``Content-Length`` with the same value counts once).  ``length``
    is the body's size for a sized body, None for a chunked one.
    """

    method: str
    target: str
    version: str
    headers: dict[str, str]
    length: int | None
    keep_alive: bool
    expect_continue: bool


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Where the head in *buffer* ends (just past its blank line), or -1 if not yet."""
    if buffer[:1] == b"\n" or buffer[:2] == b"\r\n":
        raise HttpError(400, "empty request line")
    match = _HEAD_END.search(buffer, max(0, start - 2))
    if match is not None:
        return match.end()
    if buffer and buffer[0] < 0x21:  # not a method: TLS, a stray space (as h11 does)
        raise HttpError(400, "malformed request line")
    return -1


def parse_head(head: bytes | bytearray, limits: Limits) -> Head:
    """Parse a request's head (up to and including its blank line) or raise HttpError."""
    head = bytes(head)
    first_end = head.index(b"\n")
    first = head[:first_end].removesuffix(b"\r")
    if len(first) > limits.max_head:
        raise HttpError(414, "request line too long")
    if len(head) > limits.max_head:
        raise HttpError(431, "request header section too large")
    block = head[first_end + 1 : len(head) - (2 if head.endswith(b"\n\r\n") else 1)]
    if block.count(b"\n") > limits.max_header_lines:
        raise HttpError(431, "too many header lines")
    matched = _REQUEST_LINE.fullmatch(first)
    if matched is None:
        if _ANY_VERSION.fullmatch(first):
            raise HttpError(400, "unsupported HTTP version")
        raise HttpError(400, "malformed request line")
    method, target, version = first.decode("ascii").split(" ")
    if _HEADER_BLOCK.fullmatch(block) is None:
        _header_error(block)
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\n")[:-1]:
        name, _, value = line.partition(":")
        name = name.lower()
        value = value.strip(" \t\r")
        if name in headers:
            value = _repeated(name, headers[name], value)
        elif name == "content-length":
            value = _content_length(value)
        headers[name] = value
    return _framed(method, target, version[5:], headers)


def _header_error(block: bytes) -> None:
    """Say which line of a header block that did not match is wrong."""
    for raw in block.split(b"\n")[:-1]:
        if _HEADER.fullmatch(raw.removesuffix(b"\r")) is None:
            if raw[:1] in (b" ", b"\t"):
                raise HttpError(400, "obsolete line folding")
            break
    raise HttpError(400, "malformed header line")


def _repeated(name: str, before: str, value: str) -> str:
    if name == "content-length":
        if _content_length(value) != before:
            raise HttpError(400, "conflicting Content-Length headers")
        return before
    if name in ("host", "transfer-encoding"):
        raise HttpError(400, f"repeated {name.title()} header")
    return f"{before}, {value}"


def _content_length(value: str) -> str:
    lengths = {part.strip() for part in value.split(",")}
    if len(lengths) != 1:
        raise HttpError(400, "conflicting Content-Length values")
    length = lengths.pop()
    if not _DIGITS.fullmatch(length.encode("latin-1")):
        raise HttpError(400, "malformed Content-Length")
    return length


def _framed(method: str, target: str, version: str, headers: dict[str, str]) -> Head:
    encoding = headers.get("transfer-encoding")
    length_text = headers.get("content-length")
    if encoding is not None:
        if length_text is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if encoding.lower() != "chunked":
            raise HttpError(400, "unsupported Transfer-Encoding")
        length = None
    else:
        length = 0 if length_text is None else int(length_text)
    value = headers.get("connection", "").lower()
    connection = [token.strip() for token in value.split(",")] if "," in value else [value]
    keep_alive = "close" not in connection and (version == "1.1" or "keep-alive" in connection)
    expect = "expect" in headers and headers["expect"].lower() == "100-continue"
    return Head(method, target, version, headers, length, keep_alive, expect)


def chunk_size(line: bytes | bytearray) -> int:
    """The size a chunk-size line (CRLF included) announces, or raise HttpError."""
    matched = _CHUNK.fullmatch(line, 0, len(line) - 2) if line.endswith(b"\r\n") else None
    if matched is None:
        raise HttpError(400, "malformed chunk size")
    return int(matched[1], 16)


def decode_target(target: str) -> tuple[str, str]:
    """The percent-decoded path and the raw query of a request target.

    The path must decode to UTF-8, as it must for Flask to route it; an absolute
    target (``http://host/path``) is reduced to its path.
    """
    path, _, query = target.partition("?")
    if path.startswith(("http://", "https://")):
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
    try:
        return unquote(path, errors="strict"), query
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not UTF-8") from None


@attrs.frozen
class Message:
    """A whole request read from bytes: its head, its body, and the bytes it took."""

    head: Head
    body: bytes
    consumed: int


def parse_message(data: bytes, limits: Limits) -> Message | None:
    """Read one request from the start of *data*; None if *data* ends before it does.

    The server reads from a socket with the same functions; this one is for tests
    (and anyone holding a request as bytes).
    """
    end = find_head_end(data)
    if end < 0:
        if len(data) > limits.max_head:
            raise HttpError(414 if b"\n" not in data else 431, "request head too large")
        return None
    head = parse_head(data[:end], limits)
    if head.length is not None:
        if head.length > limits.max_body:
            raise HttpError(413, "request body too large")
        if len(data) < end + head.length:
            return None
        return Message(head, data[end : end + head.length], end + head.length)
    body = bytearray()
    at = end
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = chunk_size(data[at : line_end + 2])
        at = line_end + 2
        if size == 0:
            break
        if len(body) + size > limits.max_body:
            raise HttpError(413, "request body too large")
        if len(data) < at + size + 2:
            return None
        body += data[at : at + size]
        if data[at + size : at + size + 2] != b"\r\n":
            raise HttpError(400, "malformed chunk end")
        at += size + 2
    trailer_end = find_trailers_end(data, at)
    return None if trailer_end < 0 else Message(head, bytes(body), trailer_end)


def find_trailers_end(data: bytes | bytearray, at: int) -> int:
    """Where a chunked body's trailer section starting at *at* ends, or -1 if not yet.

    The trailers are checked like header lines and then ignored.
    """
    if data[at : at + 1] == b"\n":
        return at + 1
    if data[at : at + 2] == b"\r\n":
        return at + 2
    match = _HEAD_END.search(data, at)
    if match is None:
        return -1
    for raw in bytes(data[at : match.end()]).split(b"\n")[:-2]:
        if _HEADER.fullmatch(raw.removesuffix(b"\r")) is None:
            raise HttpError(400, "malformed trailer line")
    return match.end()
