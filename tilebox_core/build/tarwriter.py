"""A minimal POSIX tar writer for regular files, with every header field fixed by this code.

Artifacts must be byte-identical on any machine and any Python version, so their bytes are not left
to ``tarfile``'s writer (whose choices are an implementation detail): each entry is a ustar header
with mtime 0, uid/gid 0, empty owner names and the given mode, followed by the content padded to
512 bytes. A name that is not ASCII or does not fit ustar's name/prefix fields gets a PAX ``path``
record before its header, as POSIX.1-2001 specifies. Any tar reader (``tarfile``, GNU tar, bsdtar)
reads the result.
"""

from __future__ import annotations

BLOCK = 512
RECORD = 20 * BLOCK  # archives end padded to a whole record, as tar(1) writes them

_NAME, _PREFIX = 100, 155
_PAX_NAME = b"././@PaxHeader"
_MAX_SIZE = 8**11  # eleven octal digits


def entry(name: str, content: bytes, mode: int) -> bytes:
    """One regular file: headers, content, padding."""
    if len(content) >= _MAX_SIZE:
        raise ValueError(f"{name}: {len(content)} bytes do not fit a ustar size field")
    encoded = name.encode("utf-8", "surrogateescape")
    split = _split(encoded) if encoded.isascii() else None
    parts: list[bytes] = []
    if split is None:
        record = _pax_record(b"path", encoded)
        parts += [_header(_PAX_NAME, b"", len(record), 0o644, b"x"), _padded(record)]
        split = (b"", encoded[:_NAME])  # readers take the name from the PAX record
    prefix, base = split
    parts += [_header(base, prefix, len(content), mode, b"0"), _padded(content)]
    return b"".join(parts)


def end(size_so_far: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record."""
    size = size_so_far + 2 * BLOCK
    return bytes(2 * BLOCK + (-size % RECORD))


def _split(name: bytes) -> tuple[bytes, bytes] | None:
    """ustar's (prefix, name) for a path, splitting at the first slash that makes both fit."""
    if len(name) <= _NAME:
        return b"", name
    for index, byte in enumerate(name):
        if byte == ord("/") and index <= _PREFIX and 0 < len(name) - index - 1 <= _NAME:
            return name[:index], name[index + 1 :]
    return None


def _pax_record(key: bytes, value: bytes) -> bytes:
    """``"<length> <key>=<value>\\n"`` where length counts the whole record, its own digits too."""
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _header(name: bytes, prefix: bytes, size: int, mode: int, kind: bytes) -> bytes:
    fields = [
        name.ljust(100, b"\0"),
        _octal(mode, 8),
        _octal(0, 8),  # uid
        _octal(0, 8),  # gid
        _octal(size, 12),
        _octal(0, 12),  # mtime
        b" " * 8,  # checksum, computed over the header with these spaces in place
        kind,
        bytes(100),  # linkname
        b"ustar\x0000",  # magic and version
        bytes(32),  # uname
        bytes(32),  # gname
        _octal(0, 8),  # devmajor
        _octal(0, 8),  # devminor
        prefix.ljust(155, b"\0"),
        bytes(12),
    ]
    header = bytearray(b"".join(fields))
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)
