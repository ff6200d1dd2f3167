"""calipers._format: one rule for numbers (NOTE [Number formatting]), against hand-made values."""

import pytest

from calipers._format import (
    MINUS,
    decimals_for,
    estimate,
    fmt_datetime,
    fmt_number,
    fmt_p,
    fmt_probability,
    fmt_sig,
)


@pytest.mark.parametrize(("width", "decimals"), [
    (3.62, 1), (0.95, 2), (0.0095, 4), (42.0, 0), (1234.0, 0), (0.1, 2), (0.099, 3),
])
def test_decimals_show_two_significant_digits_of_the_width(width, decimals):
    assert decimals_for(width) == decimals


def test_issue_example_reads_with_one_precision():
    # the issue's "0.01776 ± 0.006662 [0.013, 0.02253]": CI width 0.00953 -> 4 decimals
    assert str(estimate(0.01776, 0.013, 0.02253, std=0.006662)) == \
        "0.0178 ± 0.0067 [0.0130, 0.0225]"


def test_rates_in_percent_differences_in_points_with_true_minus():
    e = estimate(0.97329, 0.95521, 0.99137, std=0.00728, percent=True)
    assert (e.pm(), e.ci()) == ("97.3% ± 0.7", "[95.5, 99.1]")
    d = estimate(-0.00167, -0.04101, 0.03767, percent=True, diff=True)
    assert (d.value(), d.ci()) == (f"{MINUS}0.2 pp", f"[{MINUS}4.1, +3.8]")
    assert "-" not in str(d)  # no hyphen-minus anywhere


def test_without_interval_the_spread_decides_then_three_digits():
    assert estimate(0.1234, std=0.0311).pm() == "0.123 ± 0.031"  # 2·std = 0.062: 3 decimals
    assert estimate(0.1234).value() == "0.123"
    assert estimate(None).value() == "—" and estimate(0.5).ci() == "—"


def test_numbers_and_p_values():
    assert fmt_number(-0.25, 2) == f"{MINUS}0.25"
    assert fmt_number(-0.0001, 2) == "0.00"  # no "−0.00"
    assert fmt_number(float("nan"), 2) == "—" and fmt_number(True, 2) == "—"
    assert fmt_sig(-0.000123) == f"{MINUS}0.000123" and fmt_sig(0.3312) == "0.331"
    assert [fmt_p(p) for p in (0.8719, 0.0432, 0.00004, None)] == \
        ["0.87", "0.043", "< 0.001", "—"]
    assert fmt_probability(1 / 3, 0.0, 1.0) == "33% [0%, 100%]"


def test_dates_read_as_dates():
    assert fmt_datetime("2026-12-04T17:27:16+00:00") == "4 December 2026, 17:27 UTC"
    assert fmt_datetime("2026-12-04") == "4 December 2026"
    assert fmt_datetime("2026-12-04T17:27:16+02:00") == "4 December 2026, 17:27 (UTC+0200)"
    assert fmt_datetime("yesterday") == "yesterday"
