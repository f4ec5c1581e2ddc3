"""Exceptions raised by lstm_fast.

Every error is a subclass of :class:`LstmFastError`; bad input is also a :class:`ValueError`
(wrong dtypes are additionally a :class:`TypeError`), so generic handlers keep working.
"""

from __future__ import annotations


class LstmFastError(Exception):
    """Base class of every lstm_fast error."""


class InputError(LstmFastError, ValueError):
    """An input array given to ``predict``/``step``/``run`` or a state setter is unusable."""


class ShapeError(InputError):
    """Wrong rank, shape or batch size; the message names the expected shape."""


class DTypeError(InputError, TypeError):
    """An array has a dtype that cannot be used (e.g. integers, complex, objects)."""


class NonFiniteError(InputError):
    """The input holds NaN or Inf and ``check_finite`` is on (the default)."""


class WeightsError(LstmFastError, ValueError):
    """Weights given to a model constructor are inconsistent or malformed."""


class UnsupportedModelError(LstmFastError, ValueError):
    """The source model uses a layer or option lstm_fast does not run (yet)."""


class ModelFileError(LstmFastError, ValueError):
    """A model or checkpoint file is truncated, corrupted, hostile or of an unknown format."""


class FormatVersionError(ModelFileError):
    """The model file was written by a newer lstm_fast (its format version is unknown)."""


class ArgumentError(LstmFastError, ValueError):
    """A parameter of a public function (not an input array) is outside its accepted range: a
    thread count, an instruction set name, a converter option. The message states the range."""


class ArgumentTypeError(ArgumentError, TypeError):
    """A parameter of a public function has the wrong type (e.g. a bool where a count belongs)."""


class ConcurrentUseError(LstmFastError, RuntimeError):
    """One :class:`~lstm_fast.Stream` was used by two threads at once.

    A stream belongs to one thread at a time (make one stream per thread; they may share the
    model). The call that found the stream busy is refused; the other call is unaffected.
    """


class CpuFeatureError(LstmFastError, RuntimeError):
    """A requested instruction set (``isa=``/``LSTM_FAST_ISA``) is not available on this CPU."""


class EngineError(LstmFastError, RuntimeError):
    """The C engine reported an unexpected failure (a bug: please report it)."""


class SessionKeyError(LstmFastError, KeyError):
    """A :class:`~lstm_fast.StreamPool` session key is unknown or closed, or (when opening) is
    already open."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


class DuplicateFrameError(InputError):
    """A session got two frames for one tick of a :class:`~lstm_fast.StreamPool`."""


class PoolFullError(LstmFastError, RuntimeError):
    """A :class:`~lstm_fast.StreamPool` of fixed capacity has no free session."""


class FrameworkUnavailable(LstmFastError):
    """Another framework (torch, ONNX Runtime, Keras) is not installed, or cannot run this model
    or file; the message says what is missing."""


class SpecSyntaxError(LstmFastError, ValueError):
    """A ``lstm-fast bench --spec`` text that cannot be parsed or describes an invalid model."""


class ForbiddenGlobal(Exception):  # noqa: N818 - internal: caught by the torch file reader
    """A pickle in a torch file names a global outside the allow-list (turned into a
    :class:`ModelFileError` by :mod:`lstm_fast.converters.torch_file`)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name
