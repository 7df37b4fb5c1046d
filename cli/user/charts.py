"""Small terminal charts: sparklines and horizontal bars, and the time arguments the reports take."""

import re
from datetime import UTC, datetime, timedelta

import typer

BLOCKS = "▁▂▃▄▅▆▇█"
_AGO = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def sparkline(values: list[float]) -> str:
    """One block per value, from zero (or the lowest value, if negative) up to the highest: heights
    compare with zero, so a small change does not look like a large one."""
    if not values:
        return ""
    low, high = min(0.0, min(values)), max(values)
    if high == low:
        return BLOCKS[0] * len(values)
    scale = (len(BLOCKS) - 1) / (high - low)
    return "".join(BLOCKS[round((v - low) * scale)] for v in values)


def bar(value: float, largest: float, width: int = 24) -> str:
    """A horizontal bar, `width` characters for `largest`, in eighths of a character."""
    if largest <= 0 or value <= 0:
        return ""
    eighths = round(value / largest * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")


def moment(value: str | None, option: str, *, ahead: bool = False) -> str | None:
    """A time for `--start`/`--end` (or, `ahead`, `--until`) in RFC 3339: as given (a date, or a time
    without a zone, is UTC), or `30m`, `24h`, `7d`, `2w` ago (ahead: from now)."""
    if value is None:
        return None
    match = _AGO.fullmatch(value.strip())
    way = "from now" if ahead else "ago"
    try:
        if match is None:
            return parse_time(value.strip()).isoformat()
        span = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return (datetime.now(UTC) + (span if ahead else -span)).isoformat()
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither a time such as 2026-11-27T09:00:00Z or 2026-11-27, nor 30m, 24h, 7d or 2w {way}",
            param_hint=f"'{option}'",
        ) from None
    except OverflowError:
        raise typer.BadParameter(
            f"{value!r} is too far {'ahead' if ahead else 'back'}", param_hint=f"'{option}'"
        ) from None


def parse_time(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# Bucket widths for a chart over a range, the finest that keeps it within `most` buckets.
_WIDTHS = [
    (timedelta(minutes=1), "minute"),
    (timedelta(minutes=5), "5 minutes"),
    (timedelta(minutes=15), "15 minutes"),
    (timedelta(hours=1), "hour"),
    (timedelta(hours=6), "6 hours"),
    (timedelta(days=1), "day"),
    (timedelta(weeks=1), "week"),
    (timedelta(days=30), "30 days"),
]


def bucket_width(start: datetime, end: datetime, most: int = 48) -> tuple[timedelta, str]:
    span = end - start
    for width, name in _WIDTHS:
        if span / width <= most:
            return width, name
    return _WIDTHS[-1]
