"""Errors aecore raises for problems the user can fix (bad data, bad checkpoint, no GPU...).

Every message is one line that names the file / option / device that is wrong. The CLI turns
them into a clean message and a non-zero exit code, never a traceback.
"""


class AecoreError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in aecore."""

    exit_code = 1


class DataError(AecoreError):
    """A dataset file is missing, corrupt, or not what it claims to be."""


class CheckpointError(AecoreError):
    """A checkpoint or run directory cannot be used (corrupt, other model, would overwrite)."""


class DeviceError(AecoreError):
    """The requested device cannot be used (no CUDA GPU, out of device memory)."""

    exit_code = 2


class DivergenceError(AecoreError):
    """The loss became NaN or inf during training."""

    exit_code = 3


class RunDirBusyError(AecoreError):
    """Another run (another process, or another thread of this one) holds the run directory."""


class RunWriteError(AecoreError):
    """A file could not be written (disk full, I/O error, read-only, directory removed)."""

    def __init__(self, message, path=None, errno=None):
        super().__init__(message)
        self.path, self.errno = path, errno


class TrainingInterrupted(AecoreError):
    """Ctrl-C / SIGTERM: a resumable checkpoint was written."""

    exit_code = 130

    def __init__(self, message, run_dir, epoch, position):
        super().__init__(message)
        self.run_dir, self.epoch, self.position = run_dir, epoch, position
