"""One rule for writing numbers, used by the terminal tables, the HTML report and sentences.

Low layer: standard library only, so any module can import it.

# NOTE [Number formatting]
- An estimate and its interval share one number of decimals, chosen so that the interval's
  width shows two significant digits (:func:`decimals_for`): 97.3% [95.5, 99.1], not
  97.33% [95.52, 99.14], and 0.0178 [0.0130, 0.0225], not 0.01776 [0.013, 0.02253]. Without an
  interval the spread (std) decides; without either, three significant digits.
- Rates in [0, 1] (accuracy, ECE, coverage) are shown in percent; their differences in
  percentage points ("pp").
- Text uses the true minus sign U+2212 ("−0.2"), never the hyphen-minus; JSON numbers stay
  numbers.
- p-values: two significant digits, "< 0.001" below 0.001.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass

__all__ = [
    "MINUS",
    "Estimate",
    "decimals_for",
    "estimate",
    "fmt_datetime",
    "fmt_number",
    "fmt_p",
    "fmt_probability",
    "fmt_sig",
]

MINUS = "\u2212"
DASH = "—"  # shown for a missing or non-finite value


def _finite(x: object) -> float | None:
    """``x`` as a finite float, or None (bools, strings, NaN and ±inf are not numbers here)."""
    if isinstance(x, bool) or x is None:
        return None
    if not isinstance(x, (int, float)):
        try:  # NumPy scalars
            x = float(x)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    v = float(x)
    return v if math.isfinite(v) else None


def decimals_for(width: float, *, sig: int = 2) -> int:
    """Decimals that show ``width`` with ``sig`` significant digits (at least 0, at most 8).

    >>> decimals_for(3.62), decimals_for(0.0095), decimals_for(42.0)
    (1, 4, 0)
    """
    w = _finite(width)
    if w is None or w <= 0:
        return max(sig - 1, 0)
    return min(max(sig - 1 - math.floor(math.log10(abs(w))), 0), 8)


def fmt_number(x: object, decimals: int, *, signed: bool = False) -> str:
    """``x`` with ``decimals`` decimals and a true minus sign; "—" when not a finite number.

    >>> fmt_number(-0.25, 2), fmt_number(0.2, 1, signed=True)
    ('−0.25', '+0.2')
    """
    v = _finite(x)
    if v is None:
        return DASH
    text = f"{v:{'+' if signed else ''}.{decimals}f}"
    if float(text) == 0:  # no "−0.0"
        text = text.replace("-", "+" if signed else "")
    return text.replace("-", MINUS)


def fmt_sig(x: object, sig: int = 3, *, signed: bool = False) -> str:
    """``x`` with ``sig`` significant digits (fixed notation, true minus sign).

    >>> fmt_sig(0.3312), fmt_sig(1234.6), fmt_sig(-0.000123)
    ('0.331', '1235', '−0.000123')
    """
    v = _finite(x)
    if v is None:
        return DASH
    if v == 0:
        return fmt_number(0.0, max(sig - 1, 0), signed=signed)
    if abs(v) < 1e-4 or abs(v) >= 1e6:
        return f"{v:{'+' if signed else ''}.{sig - 1}e}".replace("-", MINUS)
    return fmt_number(v, max(sig - 1 - math.floor(math.log10(abs(v))), 0), signed=signed)


def fmt_p(p: object) -> str:
    """A p-value: two significant digits, "< 0.001" below 0.001, "—" when missing.

    >>> fmt_p(0.8719), fmt_p(0.0432), fmt_p(0.00004)
    ('0.87', '0.043', '< 0.001')
    """
    v = _finite(p)
    if v is None:
        return DASH
    if v < 0.001:
        return "< 0.001"
    return fmt_sig(v, 2) if v < 0.1 else fmt_number(v, 2)


def fmt_probability(p: object, low: object = None, high: object = None) -> str:
    """A probability in percent, with its interval when given: "33% [0%, 100%]"."""
    v = _finite(p)
    if v is None:
        return DASH
    lo, hi = _finite(low), _finite(high)
    if lo is None or hi is None:
        return f"{fmt_number(100 * v, 0)}%"
    return f"{fmt_number(100 * v, 0)}% [{fmt_number(100 * lo, 0)}%, {fmt_number(100 * hi, 0)}%]"


def fmt_datetime(value: object) -> str:
    """An ISO 8601 time stamp as "4 December 2026, 17:27 UTC"; other text unchanged.

    >>> fmt_datetime("2026-12-04T17:27:16+00:00")
    '4 December 2026, 17:27 UTC'
    """
    text = str(value)
    try:
        t = _dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if len(text) == 10:  # a date without a time
        return f"{t.day} {t:%B %Y}"
    if t.tzinfo is None:
        return f"{t.day} {t:%B %Y, %H:%M}"
    if t.utcoffset() == _dt.timedelta(0):
        return f"{t.day} {t:%B %Y, %H:%M} UTC"
    return f"{t.day} {t:%B %Y, %H:%M} (UTC{t:%z})"


@dataclass(frozen=True)
class Estimate:
    """The text of an estimate, its spread and interval, all with the same decimals.

    Fields are "—" when missing. ``unit`` is "%", " pp" or "" and is written once, after
    the mean (``str`` gives the full form).
    """

    mean: str
    std: str
    low: str
    high: str
    unit: str

    def pm(self) -> str:
        """``mean ± std``, e.g. "97.3% ± 0.7"."""
        return f"{self.mean}{self.unit} ± {self.std}" if self.std != DASH else self.value()

    def value(self) -> str:
        """The mean with its unit."""
        return self.mean if self.mean == DASH else f"{self.mean}{self.unit}"

    def ci(self) -> str:
        """``[low, high]``, e.g. "[95.5, 99.1]"; "—" when the interval is missing."""
        return DASH if DASH in (self.low, self.high) else f"[{self.low}, {self.high}]"

    def __str__(self) -> str:
        ci = self.ci()
        return self.pm() + ("" if ci == DASH else f" {ci}")


def estimate(mean: object, low: object = None, high: object = None, *, std: object = None,
             percent: bool = False, diff: bool = False) -> Estimate:
    """Format an estimate with one precision (NOTE [Number formatting]).

    Parameters
    ----------
    mean, low, high, std : float or None
        The estimate, its interval and its spread, in metric units (fractions for rates).
    percent : bool, default False
        A rate: show ×100, in % (in percentage points, " pp", when ``diff``).
    diff : bool, default False
        A difference: signed (+/−).

    Examples
    --------
    >>> str(estimate(0.97329, 0.95521, 0.99137, std=0.00728, percent=True))
    '97.3% ± 0.7 [95.5, 99.1]'
    >>> str(estimate(0.01776, 0.013, 0.02253, std=0.006662))
    '0.0178 ± 0.0067 [0.0130, 0.0225]'
    """
    k = 100.0 if percent else 1.0
    vals = [_finite(v) for v in (mean, low, high, std)]
    m, lo, hi, sd = (None if v is None else k * v for v in vals)
    if lo is not None and hi is not None and hi > lo:
        d = decimals_for(hi - lo)
    elif sd is not None and sd > 0:
        d = decimals_for(2 * sd)
    elif m is not None:
        d = decimals_for(abs(m) / 10) if m else 2
    else:
        d = 2
    unit = (" pp" if diff else "%") if percent else ""
    return Estimate(
        mean=fmt_number(m, d, signed=diff), std=fmt_number(sd, d),
        low=fmt_number(lo, d, signed=diff), high=fmt_number(hi, d, signed=diff), unit=unit,
    )
