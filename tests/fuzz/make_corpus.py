#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets, reproducibly:

    /usr/bin/python3 tests/fuzz/make_corpus.py

corpus/handshake/*: one byte choosing the server's TLS mode (see
fuzz_handshake.cc), then what a client sends from its first byte (client
flags, then options). corpus/requests/*: one byte choosing the handshake that
fuzz_requests sends first (see fuzz_requests.cc), then the request stream.

regress-* inputs reproduce bugs that were found (docs/security.md,
"Fuzzing"). Those found while writing the seeds are spelled out here; those
the fuzzer finds are checked in as it saved them. Only the files named here
are written: the others are left alone.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

IHAVEOPT = 0x49484156454F5054
FIXED_NEWSTYLE, NO_ZEROES = 1, 2
(OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY,
 OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_EXTENDED_HEADERS) = 1, 2, 3, 5, 6, 7, 8, 9, 10, 11
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3

REQUEST_MAGIC = 0x25609513
READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS, RESIZE = range(9)
FUA, NO_HOLE, DF, REQ_ONE, FAST_ZERO = 1, 2, 4, 8, 16

# fuzz_requests' first byte.
STRUCTURED, META, READ_ONLY, EXPORT_NAME, NOZEROES, UNKNOWN_EXPORT = 1, 2, 4, 8, 16, 32
KIB = 1024
SIZE = 1024 * KIB  # the "fuzz" export
MAX_PAYLOAD = 8 * KIB  # of both exports


def flags(f=FIXED_NEWSTYLE | NO_ZEROES):
    return struct.pack(">I", f)


def option(opt, data=b"", magic=IHAVEOPT, length=None):
    return struct.pack(">QII", magic, opt, len(data) if length is None else length) + data


def name(n):
    return struct.pack(">I", len(n)) + n


def info_request(export, *infos):
    return name(export) + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta_request(export, *queries):
    return name(export) + struct.pack(">I", len(queries)) + b"".join(name(q) for q in queries)


# fuzz_handshake's first byte: the server's TLS mode.
OFF, ON, REQUIRE = b"\0", b"\1", b"\2"

HANDSHAKES = {
    "go-default": OFF + flags() + option(OPT_GO, info_request(b"")),
    "go-named-info": OFF + flags() + option(OPT_GO, info_request(
        b"fuzz", INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE, 77)),
    "info-then-go": OFF + flags()
    + option(OPT_INFO, info_request(b"ro", INFO_DESCRIPTION, INFO_NAME))
    + option(OPT_INFO, info_request(b"nope")) + option(OPT_GO, info_request(b"fuzz")),
    "export-name": OFF + flags(FIXED_NEWSTYLE) + option(OPT_EXPORT_NAME, b"fuzz"),
    "export-name-nozeroes": OFF + flags() + option(OPT_EXPORT_NAME, b"ro"),
    "export-name-default": OFF + flags(FIXED_NEWSTYLE) + option(OPT_EXPORT_NAME),
    "export-name-unknown": OFF + flags() + option(OPT_EXPORT_NAME, b"nope"),
    "list": OFF + flags() + option(OPT_LIST) + option(OPT_LIST, b"x") + option(OPT_ABORT),
    "meta-list": OFF + flags() + option(OPT_LIST_META_CONTEXT, meta_request(b"fuzz"))
    + option(OPT_LIST_META_CONTEXT, meta_request(b"ro", b"base:", b"qemu:dirty-bitmap:x"))
    + option(OPT_LIST_META_CONTEXT, meta_request(b"nope", b"base:allocation"))
    + option(OPT_GO, info_request(b"")),
    "meta-set": OFF + flags() + option(OPT_STRUCTURED_REPLY)
    + option(OPT_SET_META_CONTEXT, meta_request(b"fuzz", b"base:allocation"))
    + option(OPT_GO, info_request(b"fuzz", INFO_BLOCK_SIZE)),
    "meta-set-unstructured": OFF + flags()
    + option(OPT_SET_META_CONTEXT, meta_request(b"fuzz", b"base:allocation"))
    + option(OPT_STRUCTURED_REPLY) + option(OPT_STRUCTURED_REPLY)
    + option(OPT_SET_META_CONTEXT, meta_request(b"ro", b"base:allocation", b"other:"))
    + option(OPT_EXPORT_NAME, b"ro"),
    "meta-malformed": OFF + flags() + option(OPT_STRUCTURED_REPLY)
    + option(OPT_SET_META_CONTEXT, name(b"fuzz") + struct.pack(">I", 0x40000000))
    + option(OPT_SET_META_CONTEXT, name(b"fuzz") + struct.pack(">II", 1, 0xffffffff))
    + option(OPT_ABORT),
    "info-malformed": OFF + flags() + option(OPT_INFO, struct.pack(">I", 1000) + b"fuzz")
    + option(OPT_INFO, info_request(b"fuzz") + b"extra")
    + option(OPT_GO, name(b"fuzz") + struct.pack(">H", 3) + b"\0\1") + option(OPT_ABORT),
    "abort": OFF + flags() + option(OPT_ABORT),
    "unsupported": OFF + flags() + option(0x1234, b"data") + option(OPT_STARTTLS)
    + option(OPT_EXTENDED_HEADERS) + option(4, b"peek") + option(OPT_GO, info_request(b"")),
    "oversized-option": OFF + flags() + option(OPT_INFO, length=65537) + b"\0" * 100,
    "oversized-export-name": OFF + flags() + option(OPT_EXPORT_NAME, length=0x80000000),
    "bad-option-magic": OFF + flags() + option(OPT_GO, info_request(b""), magic=0x1122334455667788),
    "bad-client-flags": OFF + flags(FIXED_NEWSTYLE | 0x100) + option(OPT_GO, info_request(b"")),
    "oldstyle-client": OFF + flags(0) + option(OPT_GO, info_request(b"")),
    "truncated": OFF + flags() + option(OPT_GO, length=20) + b"\0\0\0",
    "empty": OFF + b"",
    "tls-on-starttls": ON + flags() + option(OPT_STARTTLS, b"x") + option(OPT_LIST)
    + option(OPT_STARTTLS),
    "tls-on-starttls-data": ON + flags() + option(OPT_STARTTLS) + b"\x16\x03\x01\x00\x05hello",
    "tls-require-refusals": REQUIRE + flags() + option(OPT_LIST) + option(OPT_STRUCTURED_REPLY)
    + option(OPT_INFO, info_request(b"fuzz")) + option(OPT_GO, info_request(b""))
    + option(OPT_EXPORT_NAME, b"fuzz"),
    "tls-require-abort": REQUIRE + flags() + option(OPT_LIST_META_CONTEXT, meta_request(b""))
    + option(OPT_ABORT),
    "tls-require-starttls": REQUIRE + flags() + option(OPT_STARTTLS),
}


def request(cmd, offset=0, length=0, f=0, cookie=0, magic=REQUEST_MAGIC):
    # Cookies are rewritten by fuzz_requests; any value does.
    return struct.pack(">IHHQQI", magic, f, cmd, cookie, offset, length)


def write(offset, data, f=0):
    return request(WRITE, offset, len(data), f) + data


def pattern(n, seed=1):
    return bytes((i * 7 + seed) & 0xff for i in range(n))


SR, SRM = bytes([STRUCTURED]), bytes([STRUCTURED | META])
REQUESTS = {
    "read-simple": bytes([0]) + request(READ, 0, 4096) + request(READ, 100, 50)
    + request(READ, 0, 0) + request(DISC),
    "write-read": SRM + write(8192, pattern(4096)) + request(READ, 8192, 4096)
    + request(READ, 4096, 8192) + request(READ, 8192, 4096, DF) + request(DISC),
    "write-read-simple": bytes([0]) + write(100, pattern(300)) + request(READ, 0, 1024)
    + request(DISC),
    "sparse-read": SR + write(4096 + 100, pattern(512, 3)) + write(12288, pattern(4096, 5))
    + request(READ, 0, 8192) + request(READ, 4000, 4000) + request(READ, 4096, 8192)
    + request(DISC),
    "flush-fua": SR + write(0, pattern(512), FUA) + request(FLUSH) + request(FLUSH, f=FUA)
    + request(FLUSH, 5, 7) + request(DISC),
    "trim": SRM + write(0, pattern(8192)) + request(TRIM, 4096, 4096)
    + request(TRIM, 100, 200, FUA) + request(READ, 0, 8192) + request(DISC),
    "write-zeroes": SR + write(0, pattern(8192)) + request(WRITE_ZEROES, 0, 4096)
    + request(WRITE_ZEROES, 4096, 100, NO_HOLE) + request(WRITE_ZEROES, 8192, 8192, FAST_ZERO)
    + request(WRITE_ZEROES, 100, 100, FAST_ZERO | NO_HOLE) + request(READ, 0, 8192)
    + request(READ, 8192, 8192)
    + request(DISC),
    "block-status": SRM + write(4096, pattern(4096)) + request(BLOCK_STATUS, 0, SIZE)
    + request(BLOCK_STATUS, 0, SIZE, REQ_ONE) + request(BLOCK_STATUS, 100, 0)
    + request(BLOCK_STATUS, 4096 * 250, 4096 * 6) + request(DISC),
    "block-status-unnegotiated": SR + request(BLOCK_STATUS, 0, 4096) + request(DISC),
    "cache": SRM + request(CACHE, 0, 65536) + request(CACHE, 0, 4096, FUA) + request(DISC),
    "read-only": bytes([STRUCTURED | META | READ_ONLY]) + write(0, pattern(1000))
    + request(TRIM, 0, 4096) + request(WRITE_ZEROES, 0, 4096) + request(CACHE, 0, 4096)
    + request(READ, 0, 4096) + request(BLOCK_STATUS, 0, 65536) + request(DISC),
    "read-only-simple": bytes([READ_ONLY]) + write(0, pattern(100)) + request(READ, 0, 512)
    + request(DISC),
    "export-name": bytes([EXPORT_NAME | NOZEROES]) + request(READ, 0, 512) + request(DISC),
    "export-name-zeroes": bytes([EXPORT_NAME | STRUCTURED]) + request(READ, 0, 512)
    + request(DISC),
    "in-flight-disc": SR + b"".join(request(READ, i * 4096, 4096) for i in range(8))
    + request(DISC) + request(READ, 0, 4096),
    # Reads in flight when the server hangs up on a bad magic: their budget
    # was never given back.
    "regress-hang-up-budget": SR + request(READ, 0, 4096)
    + request(READ, 0, 4096, magic=0x12345678),
    "bad-magic-simple": bytes([0]) + request(READ, 0, MAX_PAYLOAD) + request(FLUSH, magic=0),
    "oversized": SR + request(READ, 0, MAX_PAYLOAD + 1) + request(READ, 0, MAX_PAYLOAD + 1, DF)
    + request(READ, SIZE - 10, 20) + request(READ, 2**64 - 1, 2) + request(TRIM, SIZE, 1)
    + request(WRITE_ZEROES, SIZE + 1, 1) + request(BLOCK_STATUS, SIZE, 1) + request(DISC),
    # A refused write whose payload ends early: the connection never closed.
    "regress-refused-write-eof": SR + request(WRITE, SIZE - 4, 8) + b"12345678"
    + request(WRITE, 0, MAX_PAYLOAD + 1) + pattern(1000),
    "budget": SR + b"".join(request(READ, i * MAX_PAYLOAD, MAX_PAYLOAD) for i in range(5))
    + write(0, pattern(MAX_PAYLOAD)) + request(DISC),
    "device-errors": SR + request(READ, SIZE - 4096, 4096) + write(SIZE - 100, pattern(100))
    + request(BLOCK_STATUS, SIZE - 8192, 8192) + request(DISC),
    "unknown-commands": SR + request(RESIZE, 0, 4096) + request(9) + request(0xffff, 1, 1)
    + request(READ, 0, 10, NO_HOLE) + request(WRITE, 0, 4, DF) + b"abcd" + request(DISC),
    # A write whose payload ends early: the connection never closed.
    "regress-write-eof": SR + request(READ, 0, 4096) + request(WRITE, 0, 4096) + pattern(100),
    "eof-without-disc": bytes([0]) + request(READ, 0, 4096) + request(FLUSH),
    # The handshake fails; what follows is taken for options.
    "unknown-export": bytes([UNKNOWN_EXPORT | STRUCTURED]) + request(READ, 0, 4096)
    + option(OPT_GO, info_request(b"")) + request(READ, 0, 4096) + request(DISC),
    "unknown-export-name": bytes([UNKNOWN_EXPORT | EXPORT_NAME]) + request(READ, 0, 4096),
}


def write_corpus(directory, entries):
    path = os.path.join(HERE, "corpus", directory)
    os.makedirs(path, exist_ok=True)
    for entry, data in sorted(entries.items()):
        with open(os.path.join(path, entry), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write_corpus("handshake", HANDSHAKES)
    write_corpus("requests", REQUESTS)
