#!/usr/bin/python3
"""Sends non-compliant requests with libnbd's strict mode off and checks that
each gets the error the NBD spec asks for, the connection stays usable, and
data is intact. Usage: malformed.py URI EXPORT_SIZE"""
import errno
import sys

import nbd

uri, size = sys.argv[1], int(sys.argv[2])


def connect(structured=True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    h.set_strict_mode(0)  # let nonsense through to the server
    return h


def expect_error(what, fn, *errnos):
    try:
        fn()
    except nbd.Error as e:
        # The bindings give the errno as a name ("EINVAL") or a number, by version.
        code = e.errno if isinstance(e.errno, int) else getattr(errno, str(e.errno), None)
        if errnos and code not in errnos:
            raise SystemExit(f"{what}: got errno {e.errno} ({e.string}), want one of {errnos}")
        return
    raise SystemExit(f"{what}: succeeded but should have failed")


for structured in (True, False):
    h = connect(structured)
    pattern = bytes(range(256)) * 16  # 4 KiB
    h.pwrite(pattern, 4096)
    h.flush()

    # Unaligned requests are served, not refused: a plain file export takes
    # any byte range, as nbdkit does (test_unaligned_nbdsh.sh checks them).
    assert h.pread(512, 4097) == pattern[1:513], "unaligned read"
    expect_error("read past end", lambda: h.pread(4096, size), errno.EINVAL)
    expect_error("read straddling end", lambda: h.pread(8192, size - 4096), errno.EINVAL)
    expect_error("write past end", lambda: h.pwrite(b"y" * 4096, size), errno.ENOSPC)
    expect_error("write at 2^63", lambda: h.pwrite(b"y" * 4096, 1 << 63), errno.ENOSPC, errno.EINVAL)
    expect_error("trim past end", lambda: h.trim(4096, size), errno.EINVAL)
    expect_error("zero past end", lambda: h.zero(4096, size), errno.ENOSPC)
    expect_error("cache past end", lambda: h.cache(4096, size), errno.EINVAL)
    expect_error("zero-length read", lambda: h.pread(0, 0), errno.EINVAL)
    expect_error("read with unknown flag", lambda: h.pread(4096, 0, 1 << 9), errno.EINVAL)
    expect_error("write with unknown flag", lambda: h.pwrite(b"z" * 4096, 0, 1 << 10), errno.EINVAL)
    expect_error("read with NO_HOLE", lambda: h.pread(4096, 0, nbd.CMD_FLAG_NO_HOLE), errno.EINVAL)
    expect_error("trim with REQ_ONE", lambda: h.trim(4096, 0, nbd.CMD_FLAG_REQ_ONE), errno.EINVAL)
    # Too large for the advertised maximum: the payload is consumed and refused.
    big = h.get_block_size(nbd.SIZE_MAXIMUM) + 4096
    expect_error("oversized write", lambda: h.pwrite(b"w" * big, 0), errno.EINVAL, errno.EOVERFLOW)
    expect_error("oversized read", lambda: h.pread(big, 0), errno.EINVAL, errno.EOVERFLOW)
    # Connection still works and data is intact.
    assert h.pread(4096, 4096) == pattern, "data changed after malformed requests"
    h.pwrite(b"\x42" * 4096, 8192, nbd.CMD_FLAG_FUA)
    assert h.pread(4096, 8192) == b"\x42" * 4096
    h.shutdown()

print("malformed requests: all refused as the spec says; data intact")
