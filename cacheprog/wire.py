# -*- test-case-name: tests.unit.test_wire -*-
"""
The GOCACHEPROG wire format, without any I/O.

What the go command writes on our stdin (see cmd/go/internal/cache/prog.go,
writeToChild), for every request::

    {"ID":3,"Command":"put","ActionID":"<b64>","OutputID":"<b64>","BodySize":5}\\n
    \\n
    "aGVsbG8="\\n

- one JSON object on one line, then one empty line; such a line is a few
  hundred bytes, so one longer than L{MAX_LINE} is a protocol error (it is
  not worth holding megabytes to find out a request is broken);
- for a C{put} whose C{BodySize} is above zero, one more line: a JSON string
  holding the standard (padded) base64 of the whole body.  A 12 MiB archive is
  one 16 MiB line, so no line-length limit applies to it and it is handed on
  in chunks as it arrives (L{BodyChunk}), never buffered here;
- C{BodySize} is omitted when zero, and then no body line follows.

What we write back (L{encode_response}) is one JSON object per line; the go
command matches answers to requests by C{ID}, in any order.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timezone

KNOWN_COMMANDS = ("get", "put", "close")
#: Longest request header line accepted (bytes, without the newline).
MAX_LINE = 64 * 1024
_BLANK = frozenset(b" \t\r\n")


class ProtocolError(Exception):
    """
    The input is not a GOCACHEPROG request stream; nothing after it can be trusted.

    @ivar events: the events completed in the same feed before the bad input;
        they are good and deserve answers.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events: list[Event] = []


@dataclass(frozen=True)
class Request:
    """
    One request header.  C{action_id}/C{output_id} are raw bytes (decoded base64).
    """

    id: int
    command: str
    action_id: bytes = b""
    output_id: bytes = b""
    body_size: int = 0


@dataclass(frozen=True)
class BodyChunk:
    """
    A piece of the base64 text of the current put's body (quotes stripped).
    """

    data: bytes


@dataclass(frozen=True)
class BodyEnd:
    """
    The current put's body is complete.
    """


Event = Request | BodyChunk | BodyEnd


def _b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _decode_id(value: object, field: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ProtocolError(f"{field} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise ProtocolError(f"{field} is not valid base64: {e}") from None


def parse_request(line: bytes) -> Request:
    """
    Parse one request header line.

    @raise ProtocolError: when the line is not a JSON object with an integer ID
        and a string Command.
    """
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"unmarshal request: {e}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("unmarshal request: not a JSON object")
    # Go's decoder matches field names case-insensitively; so do we.
    fields = {str(k).lower(): v for k, v in raw.items()}
    request_id = fields.get("id")
    command = fields.get("command")
    body_size = fields.get("bodysize") or 0
    if type(request_id) is not int or not isinstance(command, str):
        raise ProtocolError("unmarshal request: ID must be an integer, Command a string")
    if type(body_size) is not int or body_size < 0:
        raise ProtocolError("unmarshal request: BodySize must be a non-negative integer")
    output_id = fields.get("outputid")
    if not output_id:
        # Go 1.21-1.23 (and old golangci-lint) called it ObjectID.
        output_id = fields.get("objectid")
    return Request(
        id=request_id,
        command=command,
        action_id=_decode_id(fields.get("actionid"), "ActionID"),
        output_id=_decode_id(output_id, "OutputID"),
        body_size=body_size,
    )


class RequestDecoder:
    """
    Incremental decoder: feed it bytes in any chunking, get events back.

    Work is linear in the input: the buffer is read through an offset (never
    sliced per event), a header line is searched for its newline only in
    bytes not searched yet, and the buffer holds at most L{MAX_LINE} bytes
    plus the last feed.
    """

    _HEADER, _BODY_START, _BODY, _BODY_END = range(4)

    def __init__(self) -> None:
        self._buffer = b""
        self._pos = 0
        #: Bytes after C{_pos} already searched for a newline.
        self._scanned = 0
        self._state = self._HEADER
        self._body_left = 0

    @property
    def idle(self) -> bool:
        """
        True between requests: end of input here is a clean end.
        """
        return self._state == self._HEADER and not self._buffer[self._pos :].strip()

    @property
    def buffered(self) -> int:
        """
        Bytes held for the next feed (bounded by L{MAX_LINE} and a feed).
        """
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> list[Event]:
        """
        Consume C{data}; return the events it completes, in order.

        @raise ProtocolError: on malformed input; the decoder is then unusable.
        """
        # Between feeds the buffer holds only an unfinished header line or
        # body end (the offset is 0): the join is small.
        self._buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        try:
            self._parse(events)
        except ProtocolError as e:
            e.events = events
            raise
        finally:
            self._buffer, self._pos = self._buffer[self._pos :], 0
        return events

    def _parse(self, events: list[Event]) -> None:
        while self._pos < len(self._buffer):
            if self._state == self._HEADER:
                if not self._header(events):
                    break
            elif self._state == self._BODY_START:
                if not self._body_start():
                    break
            elif self._state == self._BODY:
                self._body(events)
            elif not self._body_end(events):
                break

    def end(self) -> None:
        """
        Input ended.

        @raise ProtocolError: if it ended inside a request.
        """
        if not self.idle:
            raise ProtocolError("read line: unexpected EOF inside a request")

    def _header(self, events: list[Event]) -> bool:
        end = self._buffer.find(b"\n", self._pos + self._scanned)
        if end < 0:
            self._scanned = len(self._buffer) - self._pos
            if self._scanned > MAX_LINE:
                raise ProtocolError(f"request line longer than {MAX_LINE} bytes")
            return False
        if end - self._pos > MAX_LINE:
            raise ProtocolError(f"request line longer than {MAX_LINE} bytes")
        line, self._pos, self._scanned = self._buffer[self._pos : end], end + 1, 0
        if not line.strip():
            # The empty line after each request (and any stray blank line).
            return True
        request = parse_request(line)
        events.append(request)
        if request.command == "put" and request.body_size > 0:
            self._state = self._BODY_START
            self._body_left = _b64_length(request.body_size)
        return True

    def _body_start(self) -> bool:
        buffer, pos = self._buffer, self._pos
        while pos < len(buffer) and buffer[pos] in _BLANK:
            pos += 1
        self._pos = pos
        if pos == len(buffer):
            return False
        if buffer[pos] != ord('"'):
            raise ProtocolError(f"unexpected body begin: {buffer[pos : pos + 20]!r}")
        self._pos = pos + 1
        self._state = self._BODY
        return True

    def _body(self, events: list[Event]) -> None:
        take = min(self._body_left, len(self._buffer) - self._pos)
        chunk = self._buffer[self._pos : self._pos + take]
        quote = chunk.find(b'"')
        if quote >= 0:
            raise ProtocolError(f"unexpected body end: {self._body_left - quote} base64 characters short")
        if chunk:
            events.append(BodyChunk(chunk))
        self._pos += take
        self._body_left -= take
        if self._body_left == 0:
            self._state = self._BODY_END

    def _body_end(self, events: list[Event]) -> bool:
        tail = self._buffer[self._pos : self._pos + 2]
        if len(tail) < 2:
            if tail not in (b"", b'"'):
                raise ProtocolError(f"unexpected body end: {tail!r}")
            return False
        if tail != b'"\n':
            raise ProtocolError(f"unexpected body end: {self._buffer[self._pos : self._pos + 20]!r}")
        self._pos += 2
        self._state = self._HEADER
        events.append(BodyEnd())
        return True


@dataclass(frozen=True)
class Response:
    """
    One answer.  Empty fields are omitted on the wire, as Go's encoder does.
    """

    id: int
    err: str = ""
    known_commands: tuple[str, ...] = ()
    miss: bool = False
    output_id: bytes = b""
    size: int = 0
    time: datetime | None = None
    disk_path: str = ""


def format_time(when: datetime) -> str:
    """
    RFC 3339 in UTC with sub-second digits, as Go's time.Time marshals.
    """
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_response(response: Response) -> bytes:
    """
    One JSON line for C{response}, fields in the order Go declares them.
    """
    out: dict[str, object] = {"ID": response.id}
    if response.err:
        out["Err"] = response.err
    if response.known_commands:
        out["KnownCommands"] = list(response.known_commands)
    if response.miss:
        out["Miss"] = True
    if response.output_id:
        out["OutputID"] = base64.b64encode(response.output_id).decode("ascii")
    if response.size:
        out["Size"] = response.size
    if response.time is not None:
        out["Time"] = format_time(response.time)
    if response.disk_path:
        out["DiskPath"] = response.disk_path
    return json.dumps(out, separators=(",", ":")).encode("utf-8") + b"\n"


def handshake(disable_get: bool = False, disable_put: bool = False) -> bytes:
    """
    The ID 0 line that must be the first thing on stdout.
    """
    commands = ["close"]
    if not disable_get:
        commands.append("get")
    if not disable_put:
        commands.append("put")
    return encode_response(Response(id=0, known_commands=tuple(commands)))
