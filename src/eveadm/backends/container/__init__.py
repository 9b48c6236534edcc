"""brand container: OCI containers run by runc or crun (see backend.py)."""

from .backend import ContainerBackend  # noqa: F401
