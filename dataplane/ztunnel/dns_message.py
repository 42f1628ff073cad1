"""DNS messages, as far as a cluster name server needs them (RFC 1035 §4): read one question,
write an answer with A records, or an error code. Pure: bytes in, bytes out.

Written here rather than imported: what ztunnel answers is one question about one name, and
dnspython's import would cost each node proxy a few megabytes of its 60 MB budget (its tests use
dnspython as the independent peer).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct("!6H")
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800
TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
MAX_NAME = 255


class Rcode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


class MessageError(ValueError):
    """Not a query this server can read; `rcode` is what to answer, when an answer is possible."""

    def __init__(self, reason: str, rcode: Rcode = Rcode.FORMERR) -> None:
        super().__init__(reason)
        self.rcode = rcode


@dataclass(frozen=True)
class Question:
    """The one question of a query: `name` lower-cased without the final dot."""

    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    end: int  # offset just past the question: the bytes an answer repeats

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & RD)


def parse_query(data: bytes) -> Question:
    """The question of a standard query; MessageError when there is none to answer."""
    if len(data) < HEADER.size:
        raise MessageError("shorter than a DNS header")
    ident, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if flags & QR:
        raise MessageError("a response, not a query")
    if flags & OPCODE_MASK:
        raise MessageError("only standard queries are answered", Rcode.NOTIMP)
    if qdcount != 1:
        raise MessageError(f"{qdcount} questions (one is answered)")
    labels, offset = [], HEADER.size
    while True:
        if offset >= len(data):
            raise MessageError("the name runs past the message")
        size = data[offset]
        offset += 1
        if size == 0:
            break
        if size > 63:  # a compression pointer or a reserved label type: not in a question
            raise MessageError("a compressed or extended label in the question")
        labels.append(data[offset : offset + size].decode("ascii", "replace").lower())
        offset += size
    name = ".".join(labels)
    if len(name) + 1 > MAX_NAME:
        raise MessageError("a name longer than 255 octets")
    if offset + 4 > len(data):
        raise MessageError("the question has no type and class")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return Question(ident, flags, name, qtype, qclass, offset + 4)


def response(
    query: bytes,
    question: Question,
    rcode: Rcode = Rcode.NOERROR,
    addresses: tuple[ipaddress.IPv4Address, ...] = (),
    ttl: int = 30,
    authoritative: bool = True,
) -> bytes:
    """The answer to `query`: its question repeated, then an A record per address (the owner a
    pointer to the question's name)."""
    flags = QR | RA | (question.flags & RD) | (AA if authoritative else 0) | int(rcode)
    header = HEADER.pack(question.id, flags, 1, len(addresses), 0, 0)
    records = b"".join(
        struct.pack("!HHHIH", 0xC000 | HEADER.size, TYPE_A, CLASS_IN, ttl, 4) + address.packed for address in addresses
    )
    return header + query[HEADER.size : question.end] + records


def error(query: bytes, rcode: Rcode) -> bytes | None:
    """A bare answer carrying `rcode` to a query that could not be read (no question repeated);
    None when not even its header can be read or it is no query (nothing is answered then)."""
    if len(query) < HEADER.size:
        return None
    ident, flags, *_ = HEADER.unpack_from(query)
    if flags & QR:
        return None
    return HEADER.pack(ident, QR | RA | (flags & (RD | OPCODE_MASK)) | int(rcode), 0, 0, 0, 0)
