"""Is a file a kernel? Shared by kvm and xen: a text file given as `kernel` is refused by validate
instead of failing every boot attempt."""

from __future__ import annotations


def not_a_kernel(path: str) -> str | None:
    """Why `path` cannot be a kernel QEMU boots (None when it may be one): a bzImage has "HdrS" at
    0x202; an ELF (vmlinux, multiboot) or PE (EFI stub) file is let through."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(0x206)
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    if head[0x202:0x206] == b"HdrS" or head[:4] == b"\x7fELF" or head[:2] == b"MZ":
        return None
    return f"{path} is not a kernel (no bzImage header, not an ELF or PE file)"
