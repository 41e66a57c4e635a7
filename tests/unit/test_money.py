"""Money: parsing, formatting, currencies and allocation (no database)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import babel.numbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zhangfang.errors import InvalidInput
from zhangfang.money import (
    _ISO_4217_MINOR_UNIT_OVERRIDES,
    _ISO_4217_NO_MINOR_UNIT,
    AMOUNT_MINOR_MAX,
    AMOUNT_MINOR_MIN,
    AmountHasTooManyDecimals,
    AmountMustNotBeFloat,
    AmountNotANumber,
    AmountOutOfRange,
    AmountTypeInvalid,
    Currency,
    CurrencyHasNoMinorUnit,
    CurrencyUnknown,
    RatiosInvalid,
    allocate,
    currency,
    format_minor,
    format_money,
    parse_amount,
    to_decimal,
    to_minor,
)

# --- currencies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("CNY", 2), ("USD", 2), ("HKD", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("CLF", 4)],
)
def test_a_currency_has_its_iso_4217_exponent(code: str, exponent: int) -> None:
    assert currency(code) == Currency(code=code, exponent=exponent)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("IQD", 3), ("IRR", 2), ("ALL", 2), ("LAK", 2), ("ISK", 0), ("CLP", 0), ("UGX", 0)],
)
def test_iso_4217_wins_where_babel_shows_fewer_decimals(code: str, exponent: int) -> None:
    assert currency(code).exponent == exponent


def test_every_override_names_a_code_babel_knows_with_an_iso_exponent() -> None:
    known = babel.numbers.list_currencies()
    for code, exponent in _ISO_4217_MINOR_UNIT_OVERRIDES.items():
        assert code in known
        assert currency(code).exponent == exponent


def test_iso_codes_without_a_minor_unit_are_refused() -> None:
    for code in sorted(_ISO_4217_NO_MINOR_UNIT):
        with pytest.raises(CurrencyHasNoMinorUnit) as caught:
            currency(code)
        assert caught.value.code == "currency_has_no_minor_unit"
        assert isinstance(caught.value, CurrencyUnknown)


@pytest.mark.parametrize("code", ["ZZZ", "cny", "Cny", "CN", "CNYY", "", " CNY", "C1Y", None, 156])
def test_an_unknown_or_malformed_currency_code_is_refused(code: object) -> None:
    with pytest.raises(CurrencyUnknown) as caught:
        currency(code)  # type: ignore[arg-type]
    assert caught.value.code == "currency_unknown"
    assert caught.value.field == "currency"
    assert isinstance(caught.value, InvalidInput)


def test_currency_is_cached_and_frozen() -> None:
    assert currency("CNY") is currency("CNY")
    with pytest.raises(AttributeError):
        currency("CNY").exponent = 3  # type: ignore[misc]


# --- parse_amount -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "amount_minor"),
    [
        ("12.34", "CNY", 1234),
        ("12", "CNY", 1200),
        ("12.3", "CNY", 1230),
        ("-1.5", "CNY", -150),
        ("+1.5", "CNY", 150),
        ("0.01", "CNY", 1),
        ("-0", "CNY", 0),
        ("007.50", "CNY", 750),
        (" 12.34\n", "CNY", 1234),
        ("1.230", "CNY", 123),
        ("100", "JPY", 100),
        ("100.00", "JPY", 100),
        ("1.234", "BHD", 1234),
        ("0.001", "KWD", 1),
        ("1.234", "IQD", 1234),
        ("92233720368547758.07", "CNY", AMOUNT_MINOR_MAX),
        ("-92233720368547758.07", "CNY", AMOUNT_MINOR_MIN),
    ],
)
def test_parse_amount_reads_major_units_into_minor_units(text: str, code: str, amount_minor: int) -> None:
    assert parse_amount(text, code) == amount_minor


@pytest.mark.parametrize(
    ("value", "code", "amount_minor"),
    [
        (Decimal("12.34"), "CNY", 1234),
        (Decimal("-0.05"), "CNY", -5),
        (Decimal("1E+3"), "JPY", 1000),
        (Decimal("0E-9"), "CNY", 0),
        (Decimal("0E+99"), "CNY", 0),
    ],
)
def test_parse_amount_reads_a_decimal_exactly(value: Decimal, code: str, amount_minor: int) -> None:
    assert parse_amount(value, code) == amount_minor


def test_parse_amount_refuses_a_float() -> None:
    with pytest.raises(AmountMustNotBeFloat) as caught:
        parse_amount(12.34, "CNY")  # type: ignore[arg-type]
    assert caught.value.code == "amount_must_not_be_float"
    assert caught.value.field == "amount"


def test_parse_amount_refuses_an_int_and_says_to_pass_minor_units() -> None:
    with pytest.raises(AmountTypeInvalid) as caught:
        parse_amount(12, "CNY")  # type: ignore[arg-type]
    assert caught.value.code == "amount_type_invalid"
    assert caught.value.field == "amount"
    assert "minor units directly" in caught.value.message


@pytest.mark.parametrize("value", [True, False, None, b"12", [12], Fraction(1, 2)])
def test_parse_amount_refuses_other_types(value: object) -> None:
    with pytest.raises(AmountTypeInvalid) as caught:
        parse_amount(value, "CNY")  # type: ignore[arg-type]
    assert caught.value.code == "amount_type_invalid"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "1e3",
        "1E3",
        "1,000",
        "1 000",
        "1_000",
        ".5",
        "5.",
        "--1",
        "+-1",
        "1.2.3",
        "１２",  # full-width digits
        "١٢",  # Arabic-Indic digits
        "¥12",
        "12元",
        "0x10",
    ],
)
def test_parse_amount_refuses_text_that_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(AmountNotANumber) as caught:
        parse_amount(text, "CNY")
    assert caught.value.code == "amount_not_a_number"
    assert caught.value.field == "amount"


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_parse_amount_refuses_a_decimal_that_is_not_finite(value: Decimal) -> None:
    with pytest.raises(AmountNotANumber):
        parse_amount(value, "CNY")


@pytest.mark.parametrize(
    ("text", "code"),
    [("1.234", "CNY"), ("0.001", "CNY"), ("1.5", "JPY"), ("1.2345", "BHD"), ("1.0001", "IQD")],
)
def test_parse_amount_refuses_more_decimals_than_the_currency_has(text: str, code: str) -> None:
    with pytest.raises(AmountHasTooManyDecimals) as caught:
        parse_amount(text, code)
    assert caught.value.code == "amount_has_too_many_decimals"
    assert caught.value.field == "amount"
    assert caught.value.details == {"currency": code, "exponent": currency(code).exponent}


@pytest.mark.parametrize(
    "value",
    ["92233720368547758.08", "-92233720368547758.08", "9" * 5000, "1" + "0" * 30, Decimal("1E+999999")],
)
def test_parse_amount_refuses_an_amount_beyond_64_bits(value: str | Decimal) -> None:
    with pytest.raises(AmountOutOfRange) as caught:
        parse_amount(value, "CNY")
    assert caught.value.code == "amount_out_of_range"


def test_parse_amount_checks_the_amount_type_before_the_currency() -> None:
    with pytest.raises(AmountMustNotBeFloat):
        parse_amount(1.5, "ZZZ")  # type: ignore[arg-type]
    with pytest.raises(CurrencyUnknown):
        parse_amount("abc", "ZZZ")


def test_parse_amount_reports_too_many_decimals_before_out_of_range() -> None:
    with pytest.raises(AmountHasTooManyDecimals):
        parse_amount("9" * 30 + ".001", "CNY")


# --- format_minor, to_decimal, to_minor ---------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "code", "text"),
    [
        (1234, "CNY", "12.34"),
        (1200, "CNY", "12.00"),
        (-5, "CNY", "-0.05"),
        (0, "CNY", "0.00"),
        (-150, "CNY", "-1.50"),
        (100, "JPY", "100"),
        (-100, "JPY", "-100"),
        (1234, "BHD", "1.234"),
        (5, "KWD", "0.005"),
        (1, "IQD", "0.001"),
        (AMOUNT_MINOR_MAX, "CNY", "92233720368547758.07"),
    ],
)
def test_format_minor_writes_exactly_exponent_decimals(amount_minor: int, code: str, text: str) -> None:
    assert format_minor(amount_minor, code) == text


@pytest.mark.parametrize("value", [True, 12.0, Decimal("12"), "12", None])
def test_format_minor_refuses_anything_but_an_int(value: object) -> None:
    expected = AmountMustNotBeFloat if isinstance(value, float) else AmountTypeInvalid
    with pytest.raises(expected):
        format_minor(value, "CNY")  # type: ignore[arg-type]


def test_format_minor_refuses_an_unknown_currency() -> None:
    with pytest.raises(CurrencyUnknown):
        format_minor(1, "ZZZ")


def test_to_decimal_keeps_the_currency_exponent() -> None:
    assert to_decimal(1234, "CNY") == Decimal("12.34")
    assert to_decimal(1200, "CNY").as_tuple().exponent == -2
    assert to_decimal(100, "JPY") == Decimal("100")
    assert to_decimal(-1, "BHD") == Decimal("-0.001")


def test_to_minor_is_exact_or_refuses() -> None:
    assert to_minor(Decimal("12.34"), "CNY") == 1234
    assert to_minor(Decimal("12.340000"), "CNY") == 1234
    with pytest.raises(AmountHasTooManyDecimals):
        to_minor(Decimal("12.345"), "CNY")
    with pytest.raises(AmountMustNotBeFloat):
        to_minor(12.34, "CNY")  # type: ignore[arg-type]
    with pytest.raises(AmountTypeInvalid):
        to_minor(1234, "CNY")  # type: ignore[arg-type]
    with pytest.raises(AmountTypeInvalid):
        to_minor("12.34", "CNY")  # type: ignore[arg-type]
    with pytest.raises(AmountNotANumber):
        to_minor(Decimal("NaN"), "CNY")


def test_to_minor_ignores_the_ambient_decimal_context() -> None:
    import decimal

    with decimal.localcontext() as context:
        context.prec = 3
        context.traps[decimal.Inexact] = True
        assert to_minor(Decimal("1234567.89"), "CNY") == 123456789
        assert format_money(123456789, "CNY", "en") == "CN¥1,234,567.89"


_CURRENCIES_FOR_ROUND_TRIP = ["CNY", "USD", "JPY", "KRW", "BHD", "KWD", "IQD", "CLF", "EUR", "HKD"]


@given(
    amount_minor=st.integers(min_value=AMOUNT_MINOR_MIN, max_value=AMOUNT_MINOR_MAX),
    code=st.sampled_from(_CURRENCIES_FOR_ROUND_TRIP),
)
def test_parse_amount_reads_back_what_format_minor_writes(amount_minor: int, code: str) -> None:
    text = format_minor(amount_minor, code)
    assert parse_amount(text, code) == amount_minor
    assert to_minor(to_decimal(amount_minor, code), code) == amount_minor
    assert to_decimal(amount_minor, code) == Decimal(amount_minor).scaleb(-currency(code).exponent)


# --- format_money (checked against Babel 2.18 / CLDR output) ------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "code", "locale", "text"),
    [
        (123456, "CNY", "zh_CN", "¥1,234.56"),
        (123456, "CNY", "en", "CN¥1,234.56"),
        (-123456, "CNY", "zh_CN", "-¥1,234.56"),
        (-5, "CNY", "en", "-CN¥0.05"),
        (0, "CNY", "zh_CN", "¥0.00"),
        (123456789, "CNY", "zh_CN", "¥1,234,567.89"),
        (123456, "USD", "zh_CN", "US$1,234.56"),
        (123456, "USD", "en", "$1,234.56"),
        (100, "JPY", "zh_CN", "JP¥100"),
        (100, "JPY", "en", "¥100"),
        (1234, "KWD", "en", "KWD1.234"),
        (1234, "IQD", "en", "IQD1.234"),
        (123456, "EUR", "de_DE", "1.234,56\xa0€"),
    ],
)
def test_format_money_uses_babel_with_the_iso_exponent(amount_minor: int, code: str, locale: str, text: str) -> None:
    assert format_money(amount_minor, code, locale) == text


def test_format_money_defaults_to_zh_cn() -> None:
    assert format_money(123456, "CNY") == "¥1,234.56"


def test_format_money_never_rounds_a_large_amount() -> None:
    expected = "CN¥100,000,000,000,000,000,000,000,000,000,000,000,000.01"
    assert format_money(10**40 + 1, "CNY", "en") == expected


def test_format_money_refuses_a_float() -> None:
    with pytest.raises(AmountMustNotBeFloat):
        format_money(12.34, "CNY")  # type: ignore[arg-type]


# --- allocate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "ratios", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (7, [1, 2, 3, 4], [1, 1, 2, 3]),
        (10, [3, 3, 4], [3, 3, 4]),
        (1, [1, 1], [1, 0]),
        (5, [0, 1, 1], [0, 3, 2]),
        (0, [1, 2], [0, 0]),
        (10, [Decimal("0.5"), Decimal("0.25"), Decimal("0.25")], [5, 3, 2]),
        (100, [Fraction(1, 3), Fraction(2, 3)], [33, 67]),
        (100, [Decimal("0.7"), 0, Fraction(3, 10)], [70, 0, 30]),
        (1, [5], [1]),
    ],
)
def test_allocate_splits_by_largest_remainder(amount_minor: int, ratios: list, parts: list[int]) -> None:
    assert allocate(amount_minor, ratios) == parts


@pytest.mark.parametrize(
    "ratios",
    [
        [],
        [0],
        [0, 0],
        [1, -1],
        [Decimal("-0.1"), 1],
        [1.0, 1],
        [True, 1],
        ["1", 1],
        [None],
        [Decimal("NaN")],
        [Decimal("Infinity"), 1],
        "11",
        {1, 2},
        None,
    ],
)
def test_allocate_refuses_invalid_ratios(ratios: object) -> None:
    with pytest.raises(RatiosInvalid) as caught:
        allocate(100, ratios)  # type: ignore[arg-type]
    assert caught.value.code == "ratios_invalid"
    assert caught.value.field == "ratios"


@pytest.mark.parametrize("amount", [1.0, True, "100", Decimal("100")])
def test_allocate_refuses_an_amount_that_is_not_an_int(amount: object) -> None:
    expected = AmountMustNotBeFloat if isinstance(amount, float) else AmountTypeInvalid
    with pytest.raises(expected):
        allocate(amount, [1, 1])  # type: ignore[arg-type]


_ratio = st.one_of(
    st.integers(min_value=0, max_value=10_000),
    st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False),
    st.fractions(min_value=0, max_value=1000, max_denominator=997),
)
_ratios = st.lists(_ratio, min_size=1, max_size=12).filter(lambda ratios: sum(map(Fraction, ratios)) > 0)
_amounts = st.integers(min_value=-(10**15), max_value=10**15)


@given(amount_minor=_amounts, ratios=_ratios)
def test_allocate_parts_always_sum_to_the_amount(amount_minor: int, ratios: list) -> None:
    parts = allocate(amount_minor, ratios)
    assert len(parts) == len(ratios)
    assert sum(parts) == amount_minor
    assert all(isinstance(part, int) and not isinstance(part, bool) for part in parts)


@given(amount_minor=_amounts, ratios=_ratios)
def test_allocate_keeps_each_part_within_one_unit_of_its_exact_share(amount_minor: int, ratios: list) -> None:
    parts = allocate(amount_minor, ratios)
    total = sum(map(Fraction, ratios))
    for part, ratio in zip(parts, ratios, strict=True):
        exact_share = amount_minor * Fraction(ratio) / total
        assert abs(part - exact_share) < 1


@given(amount_minor=_amounts, ratios=_ratios)
def test_allocate_gives_a_zero_ratio_nothing(amount_minor: int, ratios: list) -> None:
    ratios = [*ratios, 0]
    parts = allocate(amount_minor, ratios)
    for part, ratio in zip(parts, ratios, strict=True):
        if Fraction(ratio) == 0:
            assert part == 0


@given(amount_minor=_amounts, ratios=_ratios)
def test_allocate_never_gives_a_larger_ratio_a_smaller_part_and_ties_go_to_the_earlier(
    amount_minor: int, ratios: list
) -> None:
    magnitudes = [abs(part) for part in allocate(amount_minor, ratios)]
    weights = [Fraction(ratio) for ratio in ratios]
    for i in range(len(ratios)):
        for j in range(i + 1, len(ratios)):
            if weights[i] == weights[j]:
                assert magnitudes[i] - magnitudes[j] in (0, 1)
            elif weights[i] > weights[j]:
                assert magnitudes[i] >= magnitudes[j]
            else:
                assert magnitudes[i] <= magnitudes[j]


@given(amount_minor=_amounts, count=st.integers(min_value=1, max_value=20))
def test_allocate_by_equal_ratios_puts_the_extra_units_first(amount_minor: int, count: int) -> None:
    parts = allocate(amount_minor, [1] * count)
    base, extra = divmod(abs(amount_minor), count)
    sign = -1 if amount_minor < 0 else 1
    assert parts == [sign * (base + 1)] * extra + [sign * base] * (count - extra)
