"""A job waiting for its backend call waits on the call's future, not in a polling loop: `StopSignal` wakes it when
set, a queued call is then cancelled, a started one is waited for; a job's own stop (`child()`) stops only it."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pipeline.run.execute import StopSignal, _cancelled_while_queued


def waits(future, stop) -> tuple[list[bool], threading.Thread]:
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(_cancelled_while_queued(future, stop)))
    t.start()
    return out, t


def test_a_queued_call_is_cancelled_the_moment_stop_is_set():
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(release.wait)  # the only worker is busy
        queued = pool.submit(lambda: "never")
        stop = StopSignal()
        out, t = waits(queued, stop)
        time.sleep(0.2)
        assert t.is_alive() and not out  # waiting, not returned
        started = time.monotonic()
        stop.set()
        t.join(timeout=2)
        assert out == [True] and queued.cancelled() and time.monotonic() - started < 0.5
        release.set()


def test_a_finished_call_wakes_its_waiter_and_a_started_one_is_not_cancelled():
    with ThreadPoolExecutor(max_workers=1) as pool:
        gate = threading.Event()
        running = pool.submit(lambda: gate.wait(5) and "done")
        stop = StopSignal()
        out, t = waits(running, stop)
        time.sleep(0.1)
        stop.set()  # too late to cancel: it started
        t.join(timeout=2)
        assert out == [False] and not running.cancelled()
        gate.set()
        assert running.result(timeout=2) == "done"


def test_a_childs_stop_is_its_own_and_the_parents_reaches_it():
    parent = StopSignal()
    a, b = parent.child(), parent.child()
    a.set()
    assert a.is_set() and not b.is_set() and not parent.is_set()
    parent.set()
    assert b.is_set()
    parent.unwatch(b)  # a finished job lets go of its stop
