from __future__ import annotations

from pi_kiosk.cooldown import Cooldown


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_event_while_a_person_keeps_standing_there() -> None:
    clock = Clock()
    cd = Cooldown(60, clock)
    reports = []
    for _ in range(600):  # ten minutes at one frame per second
        reports.append(cd.should_report("E001"))
        clock.now += 1
    assert reports.count(True) == 1 and reports[0]


def test_reported_again_after_being_away_for_the_cooldown() -> None:
    clock = Clock()
    cd = Cooldown(60, clock)
    assert cd.should_report("E001")
    clock.now += 59.9
    assert not cd.should_report("E001")
    clock.now += 60  # away exactly the cooldown since the last sighting
    assert cd.should_report("E001")


def test_people_are_independent() -> None:
    clock = Clock()
    cd = Cooldown(60, clock)
    assert cd.should_report("E001") and cd.should_report("E002")
    assert not cd.should_report("E001") and not cd.should_report("E002")


def test_zero_cooldown_reports_every_sighting() -> None:
    cd = Cooldown(0, Clock())
    assert all(cd.should_report("E001") for _ in range(3))


def test_memory_stays_bounded() -> None:
    clock = Clock()
    cd = Cooldown(10, clock)
    for i in range(10_000):
        cd.should_report(f"E{i}")
        clock.now += 1
    assert len(cd._last_seen) <= 4097
    assert not cd.should_report("E9999")  # recent people are still remembered


def test_someone_reported_before_a_restart_is_remembered_for_the_rest_of_the_cooldown() -> None:
    clock = Clock()
    cd = Cooldown(60, clock)
    assert cd.remember("E001", 50) and not cd.remember("E002", 60)  # 60 s ago: the cooldown is over
    assert not cd.should_report("E001") and cd.should_report("E002")
    clock.now += 60  # seen just now (above): away a whole cooldown since
    assert cd.should_report("E001")


def test_a_remembered_report_never_shortens_a_timer() -> None:
    clock = Clock()
    cd = Cooldown(60, clock)
    cd.should_report("E001")
    clock.now += 30
    cd.remember("E001", 50)  # an older report than the sighting 30 s ago
    clock.now += 29
    assert not cd.should_report("E001")
