"""One parser per option, shared by the core and every face.

Every entry point (``lip_refine``, ``refine_batches``, the PyTorch and Keras
faces, ``lip-onnx``) reads its options through these functions, so a value
means the same thing, and a bad value fails with the same typed error
(:mod:`lip_agnostic.errors`), wherever it is passed.

Examples
--------
>>> import numpy as np
>>> from lip_agnostic.options import parse_rank, parse_bias_mode
>>> parse_rank(np.int64(2), 5), parse_rank(np.float32(0.5)), parse_rank("auto")
(2, 0.5, 'auto')
>>> parse_bias_mode("ignore")
'ignore'
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Literal

from .errors import OptionError, OptionTypeError, RankOutOfRangeError

__all__ = [
    "Rank",
    "BiasMode",
    "UNSET",
    "parse_rank",
    "parse_bias_mode",
    "renamed_option",
    "bias_mode_from_fit_bias",
    "FACE_RESERVED",
    "face_reserved",
    "check_option_names",
    "check_min_gain",
    "check_holdout",
    "check_confidence",
]

Rank = int | float | Literal["auto"]
BiasMode = Literal["fit", "ignore"]


class _Unset:
    """Marks a keyword the caller did not pass (distinct from ``None``)."""

    _instance = None

    def __new__(cls):  # one instance, so ``is UNSET`` works after copying
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unset>"

    def __reduce__(self):
        return (_Unset, ())


#: Default of a deprecated keyword: "not passed".
UNSET: Any = _Unset()


def _scalar(value: Any) -> Any:
    """A Python scalar for a 0-d array (NumPy, PyTorch, JAX, CuPy, ...); other values as they are."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if getattr(value, "ndim", None) != 0 or not hasattr(value, "dtype"):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except Exception:
            pass
    kind = str(value.dtype)  # array-API arrays without .item(): convert by dtype
    for key, conv in (("bool", bool), ("int", int), ("float", float)):
        if key in kind:
            try:
                return conv(value)
            except Exception:
                return value
    return value


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def parse_rank(value: Any, m: int | None = None, *, name: str = "rank", allow_auto: bool = True,
               allow_fraction: bool = True) -> Rank:
    """Read a rank option: how many principal components LIP keeps.

    Steps
    -----
    1. ``"auto"`` (when ``allow_auto``): returned as is (the rank is chosen
       on held-out data later).
    2. A bool (Python or NumPy, or a 0-d bool array) is refused: ``True`` is
       not a rank.
    3. An integer (``int``, NumPy integer scalars, 0-d integer arrays of any
       array library): returned as ``int``; it must be ``>= 0`` and, when
       ``m = min(q, l)`` is given, ``<= m``.
    4. A float (``float``, NumPy floating scalars, 0-d floating arrays) is an
       energy fraction: it must lie in ``(0, 1]``; returned as ``float``.

    Parameters
    ----------
    value : int, float, "auto", or a NumPy / 0-d array scalar of those
    m : int, optional
        Number of components of the weight, for the range check of an integer.
    name : str
        Option name used in error messages (``"rank"``, ``"k"``, ``"--rank"``).
    allow_auto : bool
        Whether ``"auto"`` is accepted here.
    allow_fraction : bool
        Whether an energy fraction is accepted here (``False``: an integer
        rank only, e.g. a rank to evaluate at).

    Returns
    -------
    int, float or "auto"

    Raises
    ------
    OptionTypeError
        A bool, or a value that is neither a number nor a string.
    OptionError
        A string other than ``"auto"``, or a fraction outside ``(0, 1]``.
    RankOutOfRangeError
        An integer below 0 or above ``m``.

    Examples
    --------
    >>> import numpy as np
    >>> parse_rank(3, 10), parse_rank(np.array(3), 10), parse_rank(0.9)
    (3, 3, 0.9)
    >>> parse_rank(True)
    Traceback (most recent call last):
    ...
    lip_agnostic.errors.OptionTypeError: rank must be an int, an energy fraction in (0, 1], or 'auto'; got True (bool)
    """
    if not allow_fraction:
        bound = f"[0, {m}]" if m is not None else ">= 0"
        what = f"an integer in {bound}" + (" or 'auto'" if allow_auto else "")
    elif allow_auto:
        what = "an int, an energy fraction in (0, 1], or 'auto'"
    else:
        what = "an int or an energy fraction in (0, 1]"
    v = _scalar(value)
    if isinstance(v, str):
        if v == "auto" and allow_auto:
            return "auto"
        if allow_auto:
            raise OptionError(f"{name} must be {what}; got {v!r}")
        raise OptionTypeError(f"{name} must be {what}; got {_describe(value)}")
    if isinstance(v, bool) or type(v).__name__ in ("bool_", "bool"):
        raise OptionTypeError(f"{name} must be {what}; got {_describe(value)}")
    if isinstance(v, numbers.Integral):
        k = int(v)
        if k < 0 or (m is not None and k > m):
            bound = f"[0, min(q, l)={m}]" if m is not None else "[0, min(q, l)]"
            raise RankOutOfRangeError(f"{name} must lie in {bound}; got {k}", k, m)
        return k
    if isinstance(v, numbers.Real) and allow_fraction:
        f = float(v)
        if math.isnan(f) or not 0.0 < f <= 1.0:
            raise OptionError(f"{name} as an energy fraction must lie in (0, 1]; got {f}")
        return f
    raise OptionTypeError(f"{name} must be {what}; got {_describe(value)}")


def parse_bias_mode(value: Any, *, name: str = "bias_mode") -> BiasMode:
    """Read the bias option: ``"fit"`` or ``"ignore"``.

    ``"fit"``: the tail refit targets ``Y - 1 b^T`` (the logits the layer
    really produces include its bias ``b``). ``"ignore"``: the paper's
    reference fit, targets ``Y`` (the bias still counts when held-out data
    are scored). The Keras face's old spelling ``"subtract"`` means
    ``"fit"`` and is accepted with a ``FutureWarning`` for one release.

    Examples
    --------
    >>> parse_bias_mode("fit")
    'fit'
    >>> parse_bias_mode("none")
    Traceback (most recent call last):
    ...
    lip_agnostic.errors.OptionError: bias_mode must be 'fit' (targets Y - 1 b^T) or 'ignore' (the paper's fit, targets Y); got 'none'
    """
    if isinstance(value, str):
        if value in ("fit", "ignore"):
            return value  # type: ignore[return-value]
        if value == "subtract":
            warnings.warn(f"{name}='subtract' is deprecated; use {name}='fit' (same meaning)",
                          FutureWarning, stacklevel=3)
            return "fit"
        raise OptionError(
            f"{name} must be 'fit' (targets Y - 1 b^T) or 'ignore' (the paper's fit, targets Y); got {value!r}")
    raise OptionTypeError(
        f"{name} must be 'fit' (targets Y - 1 b^T) or 'ignore' (the paper's fit, targets Y); got {_describe(value)}")


def _same(a: Any, b: Any) -> bool:
    try:
        return a is b or (type(a) is type(b) and bool(a == b))
    except Exception:
        return False


def renamed_option(new: Any, old: Any, *, new_name: str, old_name: str, default: Any = UNSET,
                   stacklevel: int = 3) -> Any:
    """The value of an option that has a deprecated old keyword.

    ``old`` is the value passed under the old name (``UNSET`` when not
    passed): it is used with a ``FutureWarning``. Passing the new name too
    (with anything but its ``default``) is an
    :class:`~lip_agnostic.errors.OptionError`. When the old name was not
    passed the result is ``new`` (``default`` when ``new`` is ``UNSET``).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     renamed_option("auto", 3, new_name="rank", old_name="k", default="auto")
    3
    >>> str(w[0].message)
    'k= is deprecated; use rank= (k= will be removed in the next release)'
    """
    if old is UNSET:
        return default if new is UNSET else new
    if new is not UNSET and not _same(new, default):
        raise OptionError(f"pass {new_name}= only: {old_name}= is its deprecated old name; got both")
    warnings.warn(f"{old_name}= is deprecated; use {new_name}= ({old_name}= will be removed in the next release)",
                  FutureWarning, stacklevel=stacklevel)
    return old


def bias_mode_from_fit_bias(bias_mode: Any, fit_bias: Any, *, stacklevel: int = 3) -> BiasMode:
    """``bias_mode`` for a core call that may use the deprecated ``fit_bias=`` (True/False).

    ``fit_bias`` is ``UNSET`` when not passed; ``True`` maps to ``"fit"`` and
    ``False`` to ``"ignore"``, with a ``FutureWarning``. Passing it together
    with ``bias_mode="ignore"`` is an :class:`~lip_agnostic.errors.OptionError`
    (``bias_mode="fit"`` is the default, so it yields to ``fit_bias``).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     bias_mode_from_fit_bias("fit", False)
    'ignore'
    """
    if fit_bias is UNSET:
        return parse_bias_mode("fit" if bias_mode is UNSET else bias_mode)
    if bias_mode is not UNSET and parse_bias_mode(bias_mode) != "fit":
        raise OptionError("pass bias_mode= only: fit_bias= is its deprecated old spelling; got both")
    if not isinstance(fit_bias, bool):
        raise OptionTypeError(f"fit_bias must be True or False; got {fit_bias!r}")
    warnings.warn("fit_bias= is deprecated; use bias_mode='fit' (fit_bias=True) or bias_mode='ignore' "
                  "(fit_bias=False)", FutureWarning, stacklevel=stacklevel)
    return "fit" if fit_bias else "ignore"


#: :func:`lip_agnostic.refine_batches` keywords that no face passes through from its users, and
#: what to pass instead (``None``: the face sets it itself: the weight's factors, the array
#: namespace). A face always hands the core its layer's own bias; ``bias_mode`` says whether it
#: enters the fit.
FACE_RESERVED: dict[str, str | None] = {
    "W": None,
    "batches": None,
    "bias": "bias_mode",
    "fit_bias": "bias_mode",
    "svd": None,
    "xp": None,
}


def face_reserved(**own: str | None) -> dict[str, str | None]:
    """The reserved option names of a face: :data:`FACE_RESERVED` plus the
    ``refine_batches`` keywords the face sets from its own arguments
    (name -> that argument, or ``None``).

    Examples
    --------
    >>> sorted(face_reserved(all_reduce=None))
    ['W', 'all_reduce', 'batches', 'bias', 'fit_bias', 'svd', 'xp']
    """
    return {**FACE_RESERVED, **own}


def _passable() -> set[str]:
    import inspect

    from .stream import refine_batches  # late: stream imports this module

    return {n for n, p in inspect.signature(refine_batches).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_option_names(options: dict, *, reserved: dict, face: str, own: tuple[str, ...] = ()) -> dict:
    """Check the names of the LIP options a face passes through (``**lip_options``).

    Every name must be a keyword-only parameter of
    :func:`lip_agnostic.refine_batches` that the face does not set itself
    (``reserved``: name -> the face's own argument to use instead, or
    ``None``; build it with :func:`face_reserved`). ``own`` names the face's
    own arguments, which may not be passed as options either. The values of
    ``min_gain``, ``holdout`` and ``confidence`` are checked too (by
    :func:`check_min_gain`, :func:`check_holdout`, :func:`check_confidence`).

    Raises
    ------
    OptionTypeError
        An unknown or reserved name (a ``TypeError``, as Python raises for an
        unexpected keyword).
    OptionError
        A bad value.

    Examples
    --------
    >>> check_option_names({"min_gain": 0.01}, reserved=face_reserved(), face="my face")
    {'min_gain': 0.01}
    >>> check_option_names({"xp": None}, reserved=face_reserved(), face="my face")
    Traceback (most recent call last):
    ...
    lip_agnostic.errors.OptionTypeError: 'xp' is set by the my face; it is chosen for you
    """
    accepted = _passable()
    for key in options:
        if key in reserved or key in own:
            alt = reserved.get(key, key)
            hint = f"pass {alt}=... instead" if alt else "it is chosen for you"
            raise OptionTypeError(f"{key!r} is set by the {face}; {hint}")
        if key not in accepted:
            allowed = sorted(accepted - set(reserved) - set(own))
            raise OptionTypeError(f"unknown LIP option {key!r}; refine_batches accepts {allowed}")
    if "min_gain" in options:
        check_min_gain(options["min_gain"])
    if "holdout" in options:
        check_holdout(options["holdout"])
    if "confidence" in options:
        check_confidence(options["confidence"])
    return dict(options)


def _real(value: Any, name: str) -> float:
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise OptionTypeError(f"{name} must be a number; got {_describe(value)}")
    return float(v)


def check_min_gain(value: Any) -> float:
    """``min_gain``: a finite number (the held-out gain a change must exceed).

    >>> check_min_gain(0.01)
    0.01
    """
    f = _real(value, "min_gain")
    if not math.isfinite(f):
        raise OptionError(f"min_gain must be a finite number; got {f}")
    return f


def check_holdout(value: Any) -> float:
    """``holdout``: the fraction of the fit stream held out to score ranks, in ``(0, 0.5]``.

    >>> check_holdout(0.2)
    0.2
    """
    f = _real(value, "holdout")
    if not 0.0 < f <= 0.5:
        raise OptionError(f"holdout must lie in (0, 0.5]; got {f}")
    return f


def check_confidence(value: Any) -> float | None:
    """``confidence``: the sign test's level, in ``(0, 1)``, or ``None`` (no test).

    >>> check_confidence(0.95), check_confidence(None)
    (0.95, None)
    """
    if value is None:
        return None
    f = _real(value, "confidence")
    if not 0.0 < f < 1.0:
        raise OptionError(f"confidence must lie in (0, 1) or be None; got {f}")
    return f


def validation_pair(validation: Any, X_val: Any, Y_val: Any) -> tuple[Any, Any]:
    """``(X_val, Y_val)`` from ``validation=`` or the deprecated ``X_val=, Y_val=`` (``UNSET``
    when not given; a ``FutureWarning`` when used). The one parser of both spellings."""
    if X_val is not UNSET or Y_val is not UNSET:
        if validation is not None:
            raise OptionError("pass validation=(X_val, Y_val) only: X_val=/Y_val= are its deprecated old spelling; got both")
        warnings.warn("X_val=/Y_val= are deprecated; pass validation=(X_val, Y_val)", FutureWarning, stacklevel=3)
        return (None if X_val is UNSET else X_val), (None if Y_val is UNSET else Y_val)
    if validation is None:
        return None, None
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise OptionTypeError(f"validation must be a pair (X_val, Y_val); got {type(validation).__name__}")
    return validation[0], validation[1]
