"""brand kvm: QEMU driven over QMP.

backend.py  the lifecycle (KvmBackend)
argv.py     QEMU's command line and the accelerator choice (pure)
qmp.py      QMP sessions, each within one deadline, and the wait for the SHUTDOWN event
"""

from .backend import KvmBackend  # noqa: F401
