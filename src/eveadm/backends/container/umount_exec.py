"""umount_exec.py PATH -- PROG ARGS: unmount PATH in this mount namespace, then exec PROG.

The crun hybrid-cgroup workaround, run by conmon as the "runtime":
`unshare --mount --propagation private -- python3 -I -S umount_exec.py
/sys/fs/cgroup/unified -- crun --root ROOT create ...`. crun 1.8 refuses to create
on a hybrid cgroup host ("cgroups in hybrid mode not supported"); in a private
mount namespace without the cgroup2 mount it works, and the host keeps its
mounts. umount(8) cannot exec a program afterwards and a shell script is not an
argument list, hence these few lines. Standard library only: it runs in a bare
interpreter (-I -S), outside the eveadm package.
"""

import ctypes
import os
import sys

MNT_DETACH = 2


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: umount_exec.py PATH -- PROG ARGS\n")
        return 2
    path, cmd = argv[0], argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), MNT_DETACH) != 0:
        sys.stderr.write(f"eveadm: umount {path}: {os.strerror(ctypes.get_errno())}\n")
        return 125
    os.execvp(cmd[0], cmd)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
