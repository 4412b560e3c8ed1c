"""`rapport bench` splits each journey's time at ingest's answer and at the score."""

from rapport.bench import _hop_latencies
from rapport.journeys import Journey


def journey(published: float, answered: float | None, scored: float | None, finished: float | None) -> Journey:
    return Journey(message_id=f"m{published}", published=published, answered=answered, scored=scored,
                   finished=finished)


def test_each_hop_is_the_time_between_its_marks() -> None:
    hops = _hop_latencies([journey(0.0, 0.010, 0.030, 0.060), journey(1.0, 1.020, 1.050, 1.090)])
    assert (hops["ingest"]["mean"], hops["scoring"]["mean"], hops["alerts"]["mean"]) == (15.0, 25.0, 35.0)


def test_a_journey_without_a_score_is_left_out_of_every_hop() -> None:
    hops = _hop_latencies([journey(0.0, 0.010, None, 0.020), journey(1.0, 1.020, 1.050, 1.090)])
    assert (hops["ingest"]["mean"], hops["scoring"]["mean"], hops["alerts"]["mean"]) == (20.0, 30.0, 40.0)
