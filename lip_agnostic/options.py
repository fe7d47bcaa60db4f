"""Every option of the method, parsed once: :class:`LIPOptions`, its constraint table, and the
policy that picks which repair runs (:meth:`LIPOptions.plan`).

Every entry point (``refine_batches``, ``lip_refine``, the faces, ``lip-onnx``)
builds one :class:`LIPOptions`; nothing downstream re-validates. Each field has
one parser in :data:`CONSTRAINTS` (in the spirit of scikit-learn's
``_parameter_constraints``), so a value means the same thing, and a bad value
fails with the same typed error (:mod:`lip_agnostic.errors`), wherever it is
passed.

Examples
--------
>>> import numpy as np
>>> from lip_agnostic.options import LIPOptions, parse_rank, parse_bias_mode
>>> parse_rank(np.int64(2), 5), parse_rank(np.float32(0.5)), parse_rank("auto")
(2, 0.5, 'auto')
>>> parse_bias_mode("ignore")
'ignore'
>>> LIPOptions(rank=3).plan((64, 10)).repair
'diagonal'
>>> LIPOptions().plan((64, 10)).repair
'full'
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Literal, Mapping

from .errors import OptionError, OptionTypeError, RankOutOfRangeError

__all__ = [
    "LIPOptions",
    "Plan",
    "CONSTRAINTS",
    "OPTION_NAMES",
    "DEFAULT_CONFIDENCE",
    "LABEL_REPAIR_CHOICES",
    "DEFAULT_HOLDOUT",
    "DEFAULT_RIDGE_FACTORS",
    "FULL_TAIL_RANK_LIMIT",
    "AUTO_TAIL_MEMORY_BYTES",
    "Rank",
    "BiasMode",
    "TargetScale",
    "parse_rank",
    "parse_bias_mode",
    "check_ridge",
    "check_target_scale",
    "check_min_gain",
    "check_holdout",
    "check_confidence",
    "check_rtol",
    "face_reserved",
    "check_option_names",
    "inert_options",
    "SELECTION_DEFAULTS",
]

Rank = int | float | Literal["auto"]
BiasMode = Literal["fit", "ignore"]
TargetScale = float | Literal["logits"]

#: Default confidence of the sign test that guards ``rank="auto"``.
DEFAULT_CONFIDENCE = 0.95

#: Fraction of the fit stream held out to score candidates when nothing else is given.
DEFAULT_HOLDOUT = 0.2

#: ``ridge="auto"`` scores ``lam = f * trace(Xc^T Xc) / q`` for each factor ``f``
#: (the mean eigenvalue of the centred Gram sets the scale, so the grid means
#: the same for any feature scale or sample count).
DEFAULT_RIDGE_FACTORS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)

#: The full tail's ``rank="auto"`` scores at most this many ranks (one eigendecomposition each).
FULL_TAIL_RANK_LIMIT = 16

#: ``tail="auto"`` runs the full tail's ``rank="auto"`` search only when its candidate
#: weights and statistics fit in this many bytes (about ``80 q l`` weight copies plus
#: ``q^2 + 2 q l`` float64 statistics); a larger head gets the paper's diagonal refit.
AUTO_TAIL_MEMORY_BYTES = 1 << 30


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
    are scored).

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
        raise OptionError(
            f"{name} must be 'fit' (targets Y - 1 b^T) or 'ignore' (the paper's fit, targets Y); got {value!r}")
    raise OptionTypeError(
        f"{name} must be 'fit' (targets Y - 1 b^T) or 'ignore' (the paper's fit, targets Y); got {_describe(value)}")


def _real(value: Any, name: str) -> float:
    v = _scalar(value)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise OptionTypeError(f"{name} must be a number; got {_describe(value)}")
    return float(v)


def check_min_gain(value: Any) -> float:
    """``min_gain``: a finite number ``>= 0`` (the held-out gain a change must exceed).

    >>> check_min_gain(0.01)
    0.01
    """
    f = _real(value, "min_gain")
    if not (math.isfinite(f) and f >= 0.0):
        raise OptionError(f"min_gain must be a finite number >= 0 (the held-out gain a change must exceed); got {f}")
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




def check_ridge(value: Any, *, allow_auto: bool = True, name: str = "ridge") -> float | str:
    """``ridge``: the full tail's ridge ``lam``, a finite number ``>= 0`` (or ``"auto"``).

    >>> check_ridge(0.5), check_ridge("auto")
    (0.5, 'auto')
    """
    what = "a number >= 0 or 'auto'" if allow_auto else "a number >= 0"
    v = _scalar(value)
    if isinstance(v, str):
        if allow_auto and v == "auto":
            return "auto"
        raise OptionError(f"{name} must be {what}; got {v!r}")
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise OptionTypeError(f"{name} must be {what}; got {_describe(value)}")
    lam = float(v)
    if not (lam >= 0.0 and math.isfinite(lam)):
        raise OptionError(f"{name} must be a finite number >= 0; got {value!r}")
    return lam


def check_target_scale(value: Any) -> TargetScale:
    """``target_scale``: a finite number ``> 0`` (fit ``c Y``) or ``"logits"``.

    >>> check_target_scale(2), check_target_scale("logits")
    (2.0, 'logits')
    """
    v = _scalar(value)
    what = "a positive number or 'logits'"
    if isinstance(v, str):
        if v != "logits":
            raise OptionError(f"target_scale must be {what}; got {v!r}")
        return "logits"
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise OptionTypeError(f"target_scale must be {what}; got {_describe(value)}")
    c = float(v)
    if not (c > 0.0 and math.isfinite(c)):
        raise OptionError(f"target_scale must be {what}; got {value!r}")
    return c


def check_rtol(value: Any) -> float | None:
    """``rtol``: the degeneracy threshold, a finite number ``>= 0``, or None (the default).

    >>> check_rtol(None), check_rtol(1e-6)
    (None, 1e-06)
    """
    if value is None:
        return None
    f = _real(value, "rtol")
    if not (f >= 0.0 and math.isfinite(f)):
        raise OptionError(f"rtol must be a finite number >= 0 or None; got {f}")
    return f


def _choice(name: str, allowed: dict[str, str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, str) and value in allowed:
            return value
        said = [f"{k!r} ({v})" if v else repr(k) for k, v in allowed.items()]
        said = ", ".join(said[:-1]) + " or " + said[-1]
        cls = OptionError if isinstance(value, str) else OptionTypeError
        raise cls(f"{name} must be {said}; got {_describe(value) if cls is OptionTypeError else repr(value)}")
    return parse


def _flag(name: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if not isinstance(value, bool):
            raise OptionTypeError(f"{name} must be True or False; got {value!r}")
        return value
    return parse


def _optional_ridge(value: Any) -> float | str | None:
    return None if value is None else check_ridge(value)


#: ``label_repair`` values and whether each is the paper (the CLI's ``--label-repair`` choices come from here).
LABEL_REPAIR_CHOICES: dict[str, str] = {"none": "", "filter": "beyond the paper", "relabel": "beyond the paper",
                                        "neighbours": "beyond the paper", "auto": "beyond the paper"}

#: One parser per option (the declarative table every entry point goes through).
CONSTRAINTS: dict[str, Callable[[Any], Any]] = {
    "rank": parse_rank,
    "tail": _choice("tail", {"auto": "", "diagonal": "the paper", "full": "beyond the paper"}),
    "ridge": _optional_ridge,
    "bias_mode": parse_bias_mode,
    "target_scale": check_target_scale,
    "degenerate": _choice("degenerate", {"zero": "", "keep": ""}),
    "rtol": check_rtol,
    "min_gain": check_min_gain,
    "confidence": check_confidence,
    "holdout": check_holdout,
    "label_repair": _choice("label_repair", LABEL_REPAIR_CHOICES),
    "temperature": _flag("temperature"),
}


@dataclass(frozen=True)
class Plan:
    """What :meth:`LIPOptions.plan` decided for one head.

    Attributes
    ----------
    repair : {"diagonal", "full", "labels"}
        ``"diagonal"`` is the paper's refit; ``"full"`` and ``"labels"`` are beyond the paper.
    reason : str
        Why (one line; what ``tail="auto"`` chose and why, or ``"requested"``).
    choose_rank : bool
        ``rank="auto"``: the rank is chosen on held-out data behind the guard.
    choose_ridge : bool
        The full tail's ``ridge="auto"``: the ridge is chosen on held-out data.
    """

    repair: str
    reason: str
    choose_rank: bool
    choose_ridge: bool

    @property
    def uses_validation(self) -> bool:
        """Whether anything is chosen on held-out data."""
        return self.choose_rank or self.choose_ridge

    @property
    def beyond_paper(self) -> bool:
        """Whether the repair is not the paper's."""
        return self.repair != "diagonal"


def _auto_tail_bytes(q: int, l: int, itemsize: int) -> int:
    m = min(q, l)
    n_candidates = min(FULL_TAIL_RANK_LIMIT, m + 1) * len(DEFAULT_RIDGE_FACTORS) + 1
    return n_candidates * q * l * int(itemsize) + 8 * (q * q + 2 * q * l)


def _repair_for(rank: Any, tail: str, ridge: Any, degenerate: str, shape: tuple[int, int],
                itemsize: int) -> tuple[str, str]:
    """The policy behind :meth:`LIPOptions.plan` (steps 1-4 there): which repair, and why."""
    if tail != "auto":
        return tail, "requested"
    if ridge is not None:
        return "full", "tail='auto' with a ridge: the full-tail refit (beyond the paper)"
    if degenerate != "zero":
        return "diagonal", f"tail='auto' with degenerate={degenerate!r}: the paper's diagonal refit"
    if not (isinstance(rank, str) and rank == "auto"):
        return "diagonal", "tail='auto' with a fixed rank: the paper's diagonal refit"
    q, l = int(shape[0]), int(shape[1])
    need = _auto_tail_bytes(q, l, itemsize)
    if need > AUTO_TAIL_MEMORY_BYTES:
        return "diagonal", (f"tail='auto': the full-tail search for a {q} x {l} head needs ~{need / 2**30:.1f} GiB "
                            f"(limit {AUTO_TAIL_MEMORY_BYTES / 2**30:.1f} GiB): the paper's diagonal refit")
    return "full", "tail='auto' with rank='auto': the guarded full-tail choice (beyond the paper)"


@dataclass(frozen=True)
class LIPOptions:
    """The options of one refinement, each parsed once by its entry in :data:`CONSTRAINTS`.

    Parameters
    ----------
    rank : int, float in (0, 1], or "auto"
        Components kept untouched: ``k``, an energy fraction, or ``"auto"``
        (every candidate scored on held-out data behind the guard).
    tail : {"auto", "diagonal", "full"}
        ``"diagonal"``: the paper's refit of the tail's singular values.
        ``"full"``: beyond the paper, a ridge refit of the whole complement.
        ``"auto"``: what the committed evidence supports (:meth:`plan`).
    ridge : float >= 0, "auto" or None
        The full tail's ridge (None: ``"auto"`` when the full tail runs).
    bias_mode : {"fit", "ignore"}
        ``"fit"``: targets ``Y - 1 b^T`` (the full tail refits the bias);
        ``"ignore"``: the paper's fit, targets ``Y``.
    target_scale : float > 0 or "logits"
    degenerate : {"zero", "keep"}
        The paper's refit only: what a tail component the data never excite gets.
    rtol : float >= 0 or None
        Degeneracy threshold (None: machine epsilon of the working dtype).
    min_gain : float
        ``rank="auto"``: the held-out gain a change must exceed.
    confidence : float in (0, 1) or None
        ``rank="auto"``: the sign test's level (None: no test).
    holdout : float in (0, 0.5]
        Fraction of the fit stream held out when no validation data are given
        and something is chosen on held-out data.
    label_repair : {"none", "filter", "relabel", "neighbours", "auto"}
        Beyond the paper (:mod:`lip_agnostic.repairs.label_aware`): also offer
        the guard ridge heads fit without (``"filter"``) or with corrected
        (``"relabel"``) labels of the rows that out-of-fold confident learning
        flags, or with the labels of the rows whose nearest neighbours out-vote
        them relabelled (``"neighbours"``); ``"auto"``: all three. Needs ``rank="auto"``, the full tail, integer labels and a fit
        stream that can be read twice; the suspect rows are reported
        (:attr:`lip_agnostic.LIPResult.label_issues`).
    temperature : bool
        Beyond the paper: after a change by a repair that is not the paper's,
        fit one temperature on the held-out data and scale the new head's
        weight and bias by it (predictions unchanged; probabilities calibrated;
        held-out NLL and ECE reported before and after).

    Rules across options (checked at construction, one message each):
    ``ridge`` needs the full tail; ``degenerate="keep"`` needs the paper's
    tail; ``min_gain`` and ``confidence`` act only for ``rank="auto"`` (a fixed
    rank forces the change) and ``holdout`` only when something is chosen on
    held-out data, so other values are refused there.

    Examples
    --------
    >>> from lip_agnostic.options import LIPOptions
    >>> LIPOptions(rank=2, tail="diagonal").rank
    2
    >>> LIPOptions(rank=2, confidence=0.9)
    Traceback (most recent call last):
    ...
    lip_agnostic.errors.OptionError: confidence=0.9 has no effect with rank=2: the significance guard runs only for rank='auto' (a fixed rank forces the change)
    """

    rank: Rank = "auto"
    tail: str = "auto"
    ridge: float | str | None = None
    bias_mode: BiasMode = "fit"
    target_scale: TargetScale = 1.0
    degenerate: str = "zero"
    rtol: float | None = None
    min_gain: float = 0.0
    confidence: float | None = DEFAULT_CONFIDENCE
    holdout: float = DEFAULT_HOLDOUT
    label_repair: str = "none"
    temperature: bool = True

    def __post_init__(self) -> None:
        for name, parse in CONSTRAINTS.items():
            object.__setattr__(self, name, parse(getattr(self, name)))
        if self.tail == "diagonal" and self.ridge is not None:
            raise OptionError(f"ridge={self.ridge!r} applies to tail='full' only "
                              "(the paper's diagonal refit has no ridge)")
        if self.tail == "full" and self.degenerate != "zero":
            raise OptionError(f"degenerate={self.degenerate!r} applies to tail='diagonal' only")
        if self.label_repair != "none" and (self.rank != "auto" or self.tail == "diagonal"):
            raise OptionError(f"label_repair={self.label_repair!r} needs rank='auto' and the full tail (tail='auto' "
                              f"or 'full'): its heads compete behind the guard; got rank={self.rank!r}, "
                              f"tail={self.tail!r}")
        for name in inert_options(self.to_dict()):
            value = getattr(self, name)
            if name == "holdout":
                raise OptionError(f"holdout={value!r} has no effect with rank={self.rank!r}: nothing is chosen "
                                  "on held-out data (rank='auto', or the full tail's ridge='auto')")
            if name == "temperature":
                raise OptionError(f"temperature={value!r} has no effect with rank={self.rank!r}, tail={self.tail!r}: "
                                  "a temperature is fit only after a repair beyond the paper that chooses on "
                                  "held-out data")
            raise OptionError(
                f"{name}={value!r} has no effect with rank={self.rank!r}: the significance guard runs "
                "only for rank='auto' (a fixed rank forces the change)")

    @classmethod
    def from_kwargs(cls, options: dict, /, *, where: str = "refine_batches") -> "LIPOptions":
        """``LIPOptions(**options)`` with an unknown name refused as an :class:`OptionTypeError`."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise OptionTypeError(f"unknown LIP option {unknown[0]!r} for {where}; the options are {list(OPTION_NAMES)}")
        return cls(**options)

    def replace(self, **changes: Any) -> "LIPOptions":
        """A copy with some options changed (parsed again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """The options as a JSON-friendly dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def uses_validation(self) -> bool:
        """Whether these options choose something on held-out data, whatever the head
        (``rank="auto"``, or the full tail with its ridge left to ``"auto"``)."""
        return self.plan((1, 1)).uses_validation

    def plan(self, shape: tuple[int, int], /, *, itemsize: int = 4) -> Plan:
        """Which repair runs for a ``(q, l)`` head, and what is chosen on held-out data.

        Steps
        -----
        1. ``tail="diagonal"`` (the paper) and ``"full"`` (beyond the paper)
           stand for themselves.
        2. ``tail="auto"`` with an explicit ``ridge``: ``"full"`` (only it has a
           ridge); with ``degenerate="keep"``: ``"diagonal"`` (only it has that).
        3. ``tail="auto"`` with a fixed or energy ``rank``: ``"diagonal"`` (in
           the committed study, docs/EVIDENCE.md, the full tail at a fixed
           ``k`` lost in every row).
        4. ``tail="auto"`` with ``rank="auto"``: ``"full"`` (its guarded choice
           met the study's adoption rule), unless its search would need more
           than :data:`AUTO_TAIL_MEMORY_BYTES`, then ``"diagonal"``.
        5. The rank is chosen on held-out data for ``rank="auto"``; the full
           tail's ridge for ``ridge`` None or ``"auto"``.

        Examples
        --------
        >>> LIPOptions(rank=3).plan((64, 10)).reason
        "tail='auto' with a fixed rank: the paper's diagonal refit"
        """
        repair, reason = _repair_for(self.rank, self.tail, self.ridge, self.degenerate, shape, itemsize)
        if self.label_repair != "none":
            if repair != "full":
                raise OptionError(f"label_repair={self.label_repair!r} needs the full-tail search, which this "
                                  f"head cannot have: {reason}")
            repair, reason = "labels", (f"label_repair={self.label_repair!r}: the full tail's candidates plus "
                                        "ridge heads on filtered or relabelled labels (beyond the paper)")
        auto_rank = self.rank == "auto"
        choose_ridge = repair in ("full", "labels") and (self.ridge is None or self.ridge == "auto")
        return Plan(repair=repair, reason=reason, choose_rank=auto_rank, choose_ridge=choose_ridge)


#: Options that act only when something is chosen on held-out data, and their defaults.
SELECTION_DEFAULTS: dict[str, Any] = {"confidence": DEFAULT_CONFIDENCE, "min_gain": 0.0, "holdout": DEFAULT_HOLDOUT,
                                      "temperature": True}


def inert_options(options: Mapping[str, Any], /) -> list[str]:
    """The one rule for options that would do nothing: the names in ``options`` with a
    non-default value that cannot act given its ``rank``, ``tail`` and ``ridge``.

    ``confidence`` and ``min_gain`` are the guard's, which runs only for
    ``rank="auto"`` (a fixed rank forces the change); ``holdout`` acts only when
    something is chosen on held-out data (``rank="auto"``, or the full tail's
    ``ridge="auto"``); ``temperature`` only when, besides, the repair is beyond
    the paper. Faces word the refusal with their own option names.

    >>> inert_options({"rank": 3, "confidence": 0.9, "holdout": 0.2})
    ['confidence']
    >>> inert_options({"rank": 3, "tail": "full", "holdout": 0.3})
    []
    """
    rank = options.get("rank", "auto")
    auto = isinstance(rank, str) and rank == "auto"
    ridge = options.get("ridge")
    repair, _ = _repair_for(rank, options.get("tail", "auto"), ridge, options.get("degenerate", "zero"), (1, 1), 4)
    chooses = auto or (repair == "full" and (ridge is None or ridge == "auto"))
    acts = {"holdout": chooses, "temperature": chooses and repair != "diagonal"}
    out = []
    for name, default in SELECTION_DEFAULTS.items():
        if name in options and options[name] != default and not acts.get(name, auto):
            out.append(name)
    return out


#: The option names, in :class:`LIPOptions`' order.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LIPOptions))

#: :func:`lip_agnostic.refine_batches` inputs that are not options (a face may pass some through).
DRIVER_INPUTS: tuple[str, ...] = ("validation", "bias", "all_reduce", "svd", "progress", "label_issues", "xp")

#: Inputs no face passes through from its users, and what to pass instead (``None``: the face sets
#: it itself). A face always hands the core its layer's own bias; ``bias_mode`` says whether it
#: enters the fit.
FACE_RESERVED: dict[str, str | None] = {"W": None, "batches": None, "bias": "bias_mode", "svd": None, "xp": None}


def face_reserved(**own: str | None) -> dict[str, str | None]:
    """The reserved names of a face: :data:`FACE_RESERVED` plus the inputs the face sets
    from its own arguments (name -> that argument, or ``None``).

    >>> sorted(face_reserved(all_reduce=None))
    ['W', 'all_reduce', 'batches', 'bias', 'svd', 'xp']
    """
    return {**FACE_RESERVED, **own}


def check_option_names(options: dict, *, reserved: dict, face: str, own: tuple[str, ...] = ()) -> dict:
    """Check the names and values of the options a face passes through (``**lip_options``).

    Every name must be an option (:data:`OPTION_NAMES`) or a driver input
    (:data:`DRIVER_INPUTS`) that the face does not set itself (``reserved``,
    from :func:`face_reserved`; ``own``: the face's own arguments). The values
    of the options are parsed by :data:`CONSTRAINTS`.

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
    accepted = set(OPTION_NAMES) | set(DRIVER_INPUTS)
    for key in options:
        if key in reserved or key in own:
            alt = reserved.get(key, key)
            hint = f"pass {alt}=... instead" if alt else "it is chosen for you"
            raise OptionTypeError(f"{key!r} is set by the {face}; {hint}")
        if key not in accepted:
            allowed = sorted(accepted - set(reserved) - set(own))
            raise OptionTypeError(f"unknown LIP option {key!r}; the {face} accepts {allowed}")
    for key, value in options.items():
        if key in CONSTRAINTS:
            CONSTRAINTS[key](value)
    return dict(options)
