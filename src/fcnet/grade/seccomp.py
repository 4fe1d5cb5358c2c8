"""A seccomp filter (classic BPF, built here) the child installs on itself before student code
runs: no new processes (threads stay allowed) and no sockets but AF_UNIX, for root too, whom
RLIMIT_NPROC exempts.  ``fork``/``vfork``/``clone`` without CLONE_THREAD fail with EAGAIN,
``clone3`` with ENOSYS (glibc then uses ``clone``), ``socket`` but AF_UNIX with EACCES; a
syscall of a foreign ABI (i386 or x32 on x86-64) kills the process."""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# syscall numbers: (arch token, fork, vfork, clone, clone3, socket); aarch64 has no fork/vfork
_ARCHES = {
    "x86_64": (0xC000003E, 57, 58, 56, 435, 41),
    "aarch64": (0xC00000B7, None, None, 220, 435, 198),
}
_LD_W_ABS, _JEQ, _JSET, _JGE, _RET = 0x20, 0x15, 0x45, 0x35, 0x06
_ALLOW, _KILL, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_CLONE_THREAD, _AF_UNIX = 0x00010000, 1
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (little-endian low word of args[0])
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _program(arch: str) -> list[tuple[int, int, int, int]]:
    token, fork, vfork, clone, clone3, socket = _ARCHES[arch]
    eagain, enosys, eacces = _ERRNO | errno.EAGAIN, _ERRNO | errno.ENOSYS, _ERRNO | errno.EACCES
    p: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ, 1, 0, token),
        (_RET, 0, 0, _KILL),
        (_LD_W_ABS, 0, 0, _NR),
    ]
    if arch == "x86_64":
        p += [(_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _KILL)]  # the x32 ABI
    for nr, err in ((fork, eagain), (vfork, eagain), (clone3, enosys)):
        if nr is not None:
            p += [(_JEQ, 0, 1, nr), (_RET, 0, 0, err)]
    p += [
        (_JEQ, 0, 4, clone),  # not clone: on to socket
        (_LD_W_ABS, 0, 0, _ARG0),
        (_JSET, 0, 1, _CLONE_THREAD),
        (_RET, 0, 0, _ALLOW),  # a thread
        (_RET, 0, 0, eagain),  # a process
        (_JEQ, 0, 4, socket),  # not socket: allow
        (_LD_W_ABS, 0, 0, _ARG0),
        (_JEQ, 0, 1, _AF_UNIX),
        (_RET, 0, 0, _ALLOW),
        (_RET, 0, 0, eacces),
        (_RET, 0, 0, _ALLOW),
    ]
    return p


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in _ARCHES


def install() -> None:
    """Install the filter on this process (and everything it starts); OSError if refused."""
    prog = _program(platform.machine())
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *ins) for ins in prog))
    fprog = ctypes.create_string_buffer(struct.pack("@HP", len(prog), ctypes.addressof(buf)))  # sock_fprog
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    if libc.prctl(PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(PR_SET_SECCOMP, ulong(SECCOMP_MODE_FILTER), fprog, ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
