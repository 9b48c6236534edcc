"""One small exception hierarchy; each class maps one-to-one to a CLI exit code."""


class EveadmError(Exception):
    """Base of every error eveadm raises on purpose. Message is one line."""

    exit_code = 1


class UsageError(EveadmError):
    exit_code = 2


class ValidationError(EveadmError):
    """Invalid payload. `report` is the validate report (bad_properties, bad_values, missing_properties)."""

    exit_code = 3

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {"bad_properties": [], "bad_values": [], "missing_properties": []}


class NotFound(EveadmError):
    exit_code = 4


class Conflict(EveadmError):
    """Exists already, wrong state for the operation, or lock held by another process."""

    exit_code = 5


class LockHeld(Conflict):
    pass


class Timeout(EveadmError):
    exit_code = 6


class Interrupted(EveadmError):
    """SIGINT or SIGTERM stopped the command at a safe point; exit code 128 + the signal's number."""

    def __init__(self, signo: int, message: str | None = None):
        import signal

        self.signo = signo
        self.exit_code = 128 + signo
        name = signal.Signals(signo).name
        super().__init__(message or f"interrupted by {name}")


class BackendError(EveadmError):
    """The hypervisor / runtime refused or failed; message carries its own words."""

    exit_code = 1


class PermanentError(BackendError):
    """A failure no retry can fix (the program does not exist, the image cannot be read, the kernel
    is not a kernel): the engine fails the boot at once instead of retrying."""


class BackendUnavailable(BackendError):
    """A tool the brand needs is missing or cannot work on this host; message names the fix."""


class NotSupported(BackendError):
    """The operation has no meaning for this brand (e.g. `pci` on container)."""


class NotLive(EveadmError):
    """A change a running domain cannot take now (the brand cannot, the guest refused, above the
    boot-time maximum); nothing was changed and it waits for the next start. Never reaches the user
    as an error: `update` reports it per change."""


class LiveChangeFailed(BackendError):
    """A live change failed part-way. `in_effect` is the property's value that now runs (what the
    backend managed to apply and could not undo), so the record can say the truth."""

    def __init__(self, message: str, in_effect=None):
        super().__init__(message)
        self.in_effect = in_effect
