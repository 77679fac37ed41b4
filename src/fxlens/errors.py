"""Typed exceptions. The CLI turns any `FxlensError` into one line on stderr and a non-zero exit."""


class FxlensError(Exception):
    """Base class of every error fxlens raises on purpose (bad input, not bugs)."""


class AudioFileError(FxlensError):
    """A file is missing, unreadable, corrupt, empty or of an unsupported format."""


class InvalidAudioError(FxlensError):
    """Audio samples are unusable: NaN/inf, zero length, all silent where loudness is needed, too short."""


class UnknownEffectError(FxlensError):
    """An effect name that the registry does not know."""


class ParameterError(FxlensError):
    """An unknown parameter name, or a value outside its declared range."""


class PresetError(FxlensError):
    """A preset file that is not valid JSON or not an fxlens preset."""


class CheckpointError(FxlensError):
    """A checkpoint that is missing, corrupt, or of the wrong kind."""
