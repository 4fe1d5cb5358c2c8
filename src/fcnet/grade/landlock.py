"""Landlock (Linux 5.13+): the child confines its own writes, deletes and renames to its private
folder before student code runs, with or without bubblewrap and even as root.  Reads stay allowed
(the interpreter and NumPy live everywhere).  Syscalls 444-446 are the same on every architecture."""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446
_VERSION = 1  # LANDLOCK_CREATE_RULESET_VERSION
_PATH_BENEATH = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
# write-side rights by ABI version: 1 WRITE_FILE and REMOVE_DIR..MAKE_SYM, 2 REFER, 3 TRUNCATE, 5 IOCTL_DEV
_WRITE_FILE = 1 << 1
_BASE = _WRITE_FILE | sum(1 << bit for bit in range(4, 13))
_BY_ABI = {2: 1 << 13, 3: 1 << 14, 5: 1 << 15}
_FILE_RIGHTS = _WRITE_FILE | (1 << 14) | (1 << 15)  # what a rule on a non-directory may hold


def abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    r = _LIBC.syscall(ctypes.c_long(_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(_VERSION))
    return max(int(r), 0)


def restrict_writes(writable: list[Path]) -> int:
    """Allow writes only beneath ``writable`` and /dev/null from now on: the ABI used, or OSError."""
    version = abi()
    if version < 1:
        raise OSError("Landlock is not available")
    handled = _BASE | sum(bit for v, bit in _BY_ABI.items() if version >= v)
    attr = ctypes.create_string_buffer(struct.pack("=Q", handled))
    rs = _LIBC.syscall(ctypes.c_long(_CREATE), attr, ctypes.c_size_t(8), ctypes.c_uint32(0))
    if rs < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path in [*writable, Path("/dev/null")]:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rights = handled if path.is_dir() else handled & _FILE_RIGHTS
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd))
                if _LIBC.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_int(rs), ctypes.c_int(_PATH_BENEATH),
                                 rule, ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}) failed")
            finally:
                os.close(fd)
        if _LIBC.prctl(38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _LIBC.syscall(ctypes.c_long(_RESTRICT), ctypes.c_int(rs), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(rs)
    return version
