"""The worker's one deadline thread: fires what is due, in order, and never what was cancelled."""

import threading

from shim_core.worker.deadlines import Deadlines


def test_deadlines_fire_in_order_and_cancelled_ones_never_fire():
    deadlines = Deadlines()
    fired: list[str] = []
    done = threading.Event()
    late = deadlines.add(0.3, lambda: (fired.append("late"), done.set()))
    deadlines.add(0.1, lambda: fired.append("early"))
    gone = deadlines.add(0.05, lambda: fired.append("cancelled"))
    deadlines.cancel(gone)
    assert done.wait(5)
    assert fired == ["early", "late"]
    assert deadlines.pending() == 0
    deadlines.cancel(late)  # after it fired: harmless


def test_a_new_earlier_deadline_wakes_the_thread():
    """The thread waiting for a far deadline is woken for a nearer one."""
    deadlines = Deadlines()
    fired = threading.Event()
    deadlines.add(3600, lambda: None)
    deadlines.add(0.05, fired.set)
    assert fired.wait(5)


def test_cancelled_deadlines_do_not_pile_up():
    """A busy worker cancels a one-hour limit per task: the heap is compacted, not grown."""
    deadlines = Deadlines()
    for _ in range(5_000):
        deadlines.cancel(deadlines.add(3600, lambda: None))
    assert deadlines.pending() == 0
    assert len(deadlines._heap) < 1_000
