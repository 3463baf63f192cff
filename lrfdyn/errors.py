"""User-facing errors.

Every error here carries a one-line message that says what is wrong and what to
do about it. The CLI prints exactly that line (``lrfdyn: error: <msg>``) and
exits with status 2; anything else is a bug and keeps its traceback.
"""


class LrfdynError(Exception):
    """Base: a user-facing error with a one-line message and a suggested fix."""


class ValidationError(LrfdynError):
    """A spec, graph or value is malformed or inconsistent."""


class LoihiRangeError(ValidationError):
    """A value does not fit the bit width Loihi gives it."""


class UnsupportedNodeError(LrfdynError):
    """A NIR node type or model block has no lowering or export."""


class ResourceError(LrfdynError):
    """The network does not fit the hardware model (cores, synapses, memory)."""


class FormatVersionError(LrfdynError):
    """An artifact was written by an incompatible version of lrfdyn."""


class CheckpointError(LrfdynError):
    """A checkpoint is missing, unreadable or not an lrfdyn checkpoint."""


class NIRFileError(LrfdynError):
    """A NIR file is missing or cannot be parsed."""


class DataError(LrfdynError):
    """A data set is missing or malformed."""


class LavaRunError(LrfdynError):
    """Lava failed to compile or run a network."""


class HardwareUnavailableError(LrfdynError):
    """Loihi 2 hardware or the lava-loihi extension is not present."""


class OutputPathError(LrfdynError):
    """An output path cannot be written, or would overwrite one of the command's inputs."""
