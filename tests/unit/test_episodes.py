"""The gap rule for submissions that name no episode (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rapport.services.scoring.episodes import Span, place

GAP = timedelta(days=90)
T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)


def days(n: float) -> datetime:
    return T0 + timedelta(days=n)


def placed_ids(ats: list[datetime], gap: timedelta = GAP) -> list[str]:
    spans: list[Span] = []
    ids = []
    for at in ats:
        span, spans = place(spans, at, gap)
        ids.append(span.episode_id)
    return ids


def test_weekly_sessions_are_one_episode_named_by_its_first_day() -> None:
    assert placed_ids([days(0), days(7), days(14)]) == ["auto-2026-03-02"] * 3


def test_a_client_back_after_more_than_the_gap_starts_a_new_episode() -> None:
    assert placed_ids([days(0), days(7), days(7 + 91)]) == ["auto-2026-03-02", "auto-2026-03-02", "auto-2026-06-08"]


def test_exactly_the_gap_is_still_the_same_episode() -> None:
    assert placed_ids([days(0), days(90)]) == ["auto-2026-03-02"] * 2


def test_a_late_administration_joins_the_episode_it_falls_in_and_widens_it() -> None:
    spans: list[Span] = []
    for at in (days(0), days(150)):
        _, spans = place(spans, at, GAP)
    late, spans = place(spans, days(-30), GAP)
    assert late.episode_id == "auto-2026-03-02" and late.first_at == days(-30)
    bridging, spans = place(spans, days(80), GAP)  # within the gap of both: the latest episode
    assert bridging.episode_id == "auto-2026-07-30"
    assert [s.episode_id for s in spans] == ["auto-2026-03-02", "auto-2026-07-30"]


def test_two_episodes_starting_on_one_day_get_distinct_names() -> None:
    assert placed_ids([days(0), days(0.5)], gap=timedelta(hours=1)) == ["auto-2026-03-02", "auto-2026-03-02-2"]
