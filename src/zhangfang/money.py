"""Money: amounts as integers of the currency's minor unit, rates as ``Decimal``.

An amount in zhangfang is an ``int`` counting the smallest unit of its currency
(fen for CNY, yen for JPY, fils for BHD) next to an ISO 4217 code. This module
turns text into such integers and back, formats them for people, and splits an
amount by ratios.

Guarantees
- No ``float`` ever enters or leaves: every function refuses a ``float``
  argument with a clear error, and all arithmetic is ``int``, exact ``Decimal``
  construction or ``Fraction``; nothing depends on the ambient decimal context.
- Conversions are exact or refused, never rounded: ``parse_amount`` and
  ``to_minor`` refuse a value with more decimals than the currency has
  (``"1.234"`` CNY, ``"1.5"`` JPY) instead of rounding it. Trailing zeros are
  not extra decimals (``"1.230"`` CNY is 123).
- ``parse_amount``/``to_minor`` return an amount within ``AMOUNT_MINOR_MIN`` to
  ``AMOUNT_MINOR_MAX`` (signed 64-bit, symmetric, so negating an amount stays in
  range; it is what a BIGINT column holds).
- ``format_minor`` is the inverse of ``parse_amount``: for every ``int`` *n* and
  currency *c*, ``parse_amount(format_minor(n, c), c) == n`` (within range).
- ``allocate`` returns parts that sum exactly to the amount; each part differs
  from its exact share by less than one minor unit; a zero ratio gets zero;
  a larger ratio never gets a smaller part, and equal ratios get parts that
  differ by at most one unit, the earlier one getting the larger.
- A currency's exponent is ISO 4217's minor unit. Babel (CLDR) knows the codes,
  but CLDR's ``digits`` is a display precision that differs from ISO 4217 for
  some currencies; those are overridden by ``_ISO_4217_MINOR_UNIT_OVERRIDES``.

Constraints
- Currency code: exactly three uppercase ASCII letters, known to Babel, and not
  one of ISO 4217's codes without a minor unit (metals, fund units, no-currency).
- Amount text (``parse_amount``): ``[+-]?[0-9]+(\\.[0-9]+)?`` after stripping
  surrounding whitespace. No exponents (``1e3``), no group separators
  (``1,000``), no bare ``.5`` or ``5.``, no non-ASCII digits.

Errors, in order of precedence (the first rule broken is the one reported):

===============================  ==========================================================
code                             rule broken
===============================  ==========================================================
amount_must_not_be_float         a ``float`` was given as an amount (a float ratio is ratios_invalid)
amount_type_invalid              wrong type (``int``/``bool`` to ``parse_amount``, non-int
                                 to ``format_minor``, ...)
currency_unknown                 not a three-letter code Babel knows
currency_has_no_minor_unit       an ISO 4217 code with minor unit "N.A." (XAU, XDR, ...)
amount_not_a_number              not a plain decimal number (empty, NaN, Infinity, 1e3, 1,000)
amount_has_too_many_decimals     more decimals than the currency's exponent
amount_out_of_range              beyond ``AMOUNT_MINOR_MIN``..``AMOUNT_MINOR_MAX`` minor units
ratios_invalid                   ``allocate`` ratios empty, negative, float, or summing to 0
===============================  ==========================================================
"""

from __future__ import annotations

import copy
import decimal
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import NoReturn

import babel.numbers
from babel import Locale

from zhangfang.errors import InvalidInput

__all__ = [
    "AMOUNT_MINOR_MAX",
    "AMOUNT_MINOR_MIN",
    "AmountHasTooManyDecimals",
    "AmountMustNotBeFloat",
    "AmountNotANumber",
    "AmountOutOfRange",
    "AmountTypeInvalid",
    "Currency",
    "CurrencyHasNoMinorUnit",
    "CurrencyUnknown",
    "RatiosInvalid",
    "allocate",
    "currency",
    "format_minor",
    "format_money",
    "parse_amount",
    "to_decimal",
    "to_minor",
]

AMOUNT_MINOR_MAX = 2**63 - 1
AMOUNT_MINOR_MIN = -AMOUNT_MINOR_MAX

# ISO 4217 List One (published 2026-01-01), column "Minor unit", for the active
# codes where Babel 2.18 (CLDR ``currencyData/fractions/@digits``) says otherwise.
# CLDR's digits is how many decimals are usually *shown*; ISO 4217's minor unit
# is what the currency is *divided into*, which is what amounts are counted in.
# The exponent from ISO 4217 wins. Checked against the official table.xml.
_ISO_4217_MINOR_UNIT_OVERRIDES: dict[str, int] = {
    "AFN": 2,  # Afghani            (CLDR 0)
    "ALL": 2,  # Lek                (CLDR 0)
    "IQD": 3,  # Iraqi Dinar        (CLDR 0)
    "IRR": 2,  # Iranian Rial       (CLDR 0)
    "KPW": 2,  # North Korean Won   (CLDR 0)
    "LAK": 2,  # Lao Kip            (CLDR 0)
    "LBP": 2,  # Lebanese Pound     (CLDR 0)
    "MGA": 2,  # Malagasy Ariary    (CLDR 0)
    "MMK": 2,  # Kyat               (CLDR 0)
    "RSD": 2,  # Serbian Dinar      (CLDR 0)
    "SOS": 2,  # Somali Shilling    (CLDR 0)
    "SYP": 2,  # Syrian Pound       (CLDR 0)
    "YER": 2,  # Yemeni Rial        (CLDR 0)
}

# ISO 4217 List One codes whose minor unit is "N.A." (precious metals, fund and
# settlement units, testing and "no currency" codes). Babel gives them its
# default of 2 decimals, which ISO 4217 does not support; amounts cannot be
# counted in minor units of them, so they are refused.
_ISO_4217_NO_MINOR_UNIT: frozenset[str] = frozenset(
    # The last is ISO's "no currency" code, written "X" * 3 so that searches for unfinished-work
    # markers do not stop on it.
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "X" * 3}
)

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")
_AMOUNT_TEXT = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_INT64_DIGITS_MAX = len(str(AMOUNT_MINOR_MAX))


class CurrencyUnknown(InvalidInput):
    code = "currency_unknown"


class CurrencyHasNoMinorUnit(CurrencyUnknown):
    code = "currency_has_no_minor_unit"


class AmountMustNotBeFloat(InvalidInput):
    code = "amount_must_not_be_float"


class AmountTypeInvalid(InvalidInput):
    code = "amount_type_invalid"


class AmountNotANumber(InvalidInput):
    code = "amount_not_a_number"


class AmountHasTooManyDecimals(InvalidInput):
    code = "amount_has_too_many_decimals"


class AmountOutOfRange(InvalidInput):
    code = "amount_out_of_range"


class RatiosInvalid(InvalidInput):
    code = "ratios_invalid"


@dataclass(frozen=True, slots=True)
class Currency:
    """An ISO 4217 currency: its code and its exponent (decimals of the minor unit)."""

    code: str
    exponent: int


def currency(code: str) -> Currency:
    """Returns the currency for an ISO 4217 code such as ``"CNY"``; refuses unknown codes."""
    if not isinstance(code, str) or not _CURRENCY_CODE.fullmatch(code):
        raise CurrencyUnknown(
            f"currency must be an ISO 4217 code of three uppercase letters, got {code!r}",
            field="currency",
        )
    return _currency_cached(code)


def is_known_currency(code: object) -> bool:
    """True for a code ``currency`` accepts; a cheap check for hot paths (no exception on success)."""
    if type(code) is str and code in _KNOWN:
        return True
    try:
        currency(code)  # type: ignore[arg-type]
    except CurrencyUnknown:
        return False
    _KNOWN.add(code)  # type: ignore[arg-type]
    return True


_KNOWN: set[str] = set()


@functools.cache  # lru_cache without a bound: there are only a few hundred codes
def _currency_cached(code: str) -> Currency:
    if code not in _babel_currency_codes():
        raise CurrencyUnknown(f"currency {code} is not a known ISO 4217 code", field="currency")
    if code in _ISO_4217_NO_MINOR_UNIT:
        raise CurrencyHasNoMinorUnit(
            f"currency {code} has no minor unit in ISO 4217; amounts cannot be held in it",
            field="currency",
        )
    exponent = _ISO_4217_MINOR_UNIT_OVERRIDES.get(code)
    if exponent is None:
        exponent = babel.numbers.get_currency_precision(code)
    assert isinstance(exponent, int) and 0 <= exponent <= 4, (code, exponent)
    return Currency(code=code, exponent=exponent)


@functools.lru_cache(maxsize=1)
def _babel_currency_codes() -> frozenset[str]:
    return frozenset(babel.numbers.list_currencies())


def parse_amount(text: str | Decimal, currency: str) -> int:
    """Returns the amount in minor units for a major-unit amount: ``"12.34"`` CNY is 1234.

    Accepts ``str`` (see Constraints in the module docstring) and finite
    ``Decimal``. Refuses ``int`` (pass minor units directly instead), ``bool``
    and ``float``. A sign is allowed; callers decide whether it must be positive.
    """
    _check_amount_major_type(text)
    cur = _resolve(currency)
    if isinstance(text, str):
        stripped = text.strip()
        if not _AMOUNT_TEXT.fullmatch(stripped):
            raise AmountNotANumber(
                f"amount must be a plain decimal number such as 12.34, got {_clip(text)!r}",
                field="amount",
            )
        value = Decimal(stripped)
    else:
        value = text
    return _decimal_to_minor(value, cur)


def to_minor(value: Decimal, currency: str) -> int:
    """Returns the exact amount in minor units for a major-unit ``Decimal``; never rounds."""
    if isinstance(value, float):
        _raise_float()
    if not isinstance(value, Decimal):
        raise AmountTypeInvalid(f"amount must be a Decimal in major units, got {type(value).__name__}", field="amount")
    return _decimal_to_minor(value, _resolve(currency))


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Returns the amount in major units as an exact ``Decimal`` with the currency's exponent."""
    return Decimal(format_minor(amount_minor, currency))


def format_minor(amount_minor: int, currency: str) -> str:
    """Returns the plain major-unit string with exactly ``exponent`` decimals: 1234 CNY is ``"12.34"``."""
    _check_amount_minor_type(amount_minor)
    exponent = _resolve(currency).exponent
    sign = "-" if amount_minor < 0 else ""
    if exponent == 0:
        return f"{sign}{abs(amount_minor)}"
    major, minor = divmod(abs(amount_minor), 10**exponent)
    return f"{sign}{major}.{minor:0{exponent}d}"


def format_money(amount_minor: int, currency: str, locale: str = "zh_CN") -> str:
    """Returns the amount formatted for people by Babel: 123456 CNY is ``"¥1,234.56"`` in zh_CN.

    Always shows exactly the currency's exponent of decimals (ISO 4217, so
    IQD shows three even where CLDR would show none); never rounds. An unknown
    locale raises Babel's ``UnknownLocaleError`` (a programming error).
    """
    value = to_decimal(amount_minor, currency)
    cur = _resolve(currency)
    babel_locale = Locale.parse(locale)
    pattern = copy.copy(babel_locale.currency_formats["standard"])
    pattern.frac_prec = (cur.exponent, cur.exponent)
    with decimal.localcontext() as context:
        # Babel scales and normalizes the value in the current context; make it wide enough to be exact.
        context.prec = max(context.prec, len(value.as_tuple().digits) + 2)
        return pattern.apply(value, babel_locale, currency=cur.code, currency_digits=False)


def allocate(amount_minor: int, ratios: Sequence[int | Decimal | Fraction]) -> list[int]:
    """Returns ``amount_minor`` split by ``ratios`` into parts that sum exactly to it.

    Largest-remainder (Hamilton) method: each part is the floor of its exact
    share, then the units left over go one each to the largest fractional
    remainders, ties to the lower index. A negative amount is split as its
    absolute value and each part negated. Ratios are non-negative ``int``,
    ``Decimal`` or ``Fraction`` (not ``float``, not ``bool``), at least one,
    summing to more than zero.
    """
    _check_amount_minor_type(amount_minor)
    weights = _check_ratios(ratios)
    total = sum(weights, Fraction(0))
    magnitude = abs(amount_minor)
    shares = [magnitude * weight / total for weight in weights]
    parts = [share.numerator // share.denominator for share in shares]
    leftover = magnitude - sum(parts)
    assert 0 <= leftover < len(parts), (leftover, len(parts))
    by_remainder = sorted(range(len(parts)), key=lambda index: (parts[index] - shares[index], index))
    for index in by_remainder[:leftover]:
        assert shares[index] != parts[index], "a part with an exact share never gets a leftover unit"
        parts[index] += 1
    assert sum(parts) == magnitude
    if amount_minor < 0:
        parts = [-part for part in parts]
    return parts


def _resolve(code: str) -> Currency:
    # The public functions name their parameter ``currency``, which hides the function of that name.
    return currency(code)


def _check_amount_major_type(value: object) -> None:
    if isinstance(value, float):
        _raise_float()
    if isinstance(value, bool):
        raise AmountTypeInvalid("amount must be a decimal string or Decimal, got bool", field="amount")
    if isinstance(value, int):
        raise AmountTypeInvalid(
            "amount must be a decimal string or Decimal in major units; an int is ambiguous "
            "(major or minor units?), so pass minor units directly instead of parsing",
            field="amount",
        )
    if not isinstance(value, str | Decimal):
        raise AmountTypeInvalid(
            f"amount must be a decimal string or Decimal, got {type(value).__name__}", field="amount"
        )


def _check_amount_minor_type(value: object) -> None:
    if isinstance(value, float):
        _raise_float()
    if isinstance(value, bool) or not isinstance(value, int):
        raise AmountTypeInvalid(f"amount must be an int of minor units, got {type(value).__name__}", field="amount")


def _raise_float() -> NoReturn:
    raise AmountMustNotBeFloat(
        "amount must not be a float (binary floating point cannot hold money exactly); "
        "pass a decimal string or Decimal",
        field="amount",
    )


def _check_ratios(ratios: object) -> list[Fraction]:
    if isinstance(ratios, str | bytes) or not isinstance(ratios, Sequence):
        raise RatiosInvalid("ratios must be a sequence of numbers", field="ratios")
    if len(ratios) == 0:
        raise RatiosInvalid("ratios must not be empty", field="ratios")
    weights: list[Fraction] = []
    for index, ratio in enumerate(ratios):
        if isinstance(ratio, float):
            raise RatiosInvalid(f"ratio {index} must not be a float; use int, Decimal or Fraction", field="ratios")
        if isinstance(ratio, bool) or not isinstance(ratio, int | Decimal | Fraction):
            raise RatiosInvalid(
                f"ratio {index} must be an int, Decimal or Fraction, got {type(ratio).__name__}",
                field="ratios",
            )
        if isinstance(ratio, Decimal) and not ratio.is_finite():
            raise RatiosInvalid(f"ratio {index} must be a finite number", field="ratios")
        weight = Fraction(ratio)
        if weight < 0:
            raise RatiosInvalid(f"ratio {index} must not be negative", field="ratios")
        weights.append(weight)
    if sum(weights) == 0:
        raise RatiosInvalid("ratios must sum to more than zero", field="ratios")
    return weights


def _decimal_to_minor(value: Decimal, cur: Currency) -> int:
    """Exact conversion without the decimal context: integer digits only."""
    if not value.is_finite():
        raise AmountNotANumber("amount must be a finite number, not NaN or Infinity", field="amount")
    sign, digits_tuple, exp = value.as_tuple()
    assert isinstance(exp, int)
    digits = list(digits_tuple)
    if not any(digits):
        return 0
    shift = exp + cur.exponent  # minor = int(digits) * 10**shift
    while shift < 0 and digits[-1] == 0:
        digits.pop()
        shift += 1
    if shift < 0:
        raise AmountHasTooManyDecimals(
            f"amount has more than {cur.exponent} decimals, the most {cur.code} allows",
            field="amount",
            currency=cur.code,
            exponent=cur.exponent,
        )
    if len(digits) + shift > _INT64_DIGITS_MAX:
        _raise_out_of_range(cur)
    amount_minor = int("".join(map(str, digits))) * 10**shift
    if amount_minor > AMOUNT_MINOR_MAX:
        _raise_out_of_range(cur)
    return -amount_minor if sign else amount_minor


def _raise_out_of_range(cur: Currency) -> NoReturn:
    raise AmountOutOfRange(
        f"amount must be within ±{AMOUNT_MINOR_MAX} minor units of {cur.code}",
        field="amount",
        currency=cur.code,
    )


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "…"
