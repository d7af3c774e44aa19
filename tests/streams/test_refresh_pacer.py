"""The KPI refresh keeps to its share of the reader thread: a slow refresh (a big store) spaces out the next one
instead of running back to back; a fast one keeps the timer's pace."""

import pytest

from rmm_monitor.streams.app import RefreshPacer


def test_a_slow_refresh_spaces_out_the_next_and_a_fast_one_does_not():
    pacer = RefreshPacer(share=0.5)
    assert pacer.due(0.0)
    pacer.done(started=100.0, ended=119.0)  # 19 s, as at 10 M events
    assert not pacer.due(119.0) and not pacer.due(137.9) and pacer.due(138.0)
    pacer.done(started=140.0, ended=140.2)  # a small store: due again at the next timer tick
    assert pacer.due(140.4)


def test_a_quarter_share_leaves_three_quarters_of_the_time_to_the_rest():
    pacer = RefreshPacer(share=0.25)
    pacer.done(started=0.0, ended=4.0)
    assert not pacer.due(15.9) and pacer.due(16.0)
    assert RefreshPacer(share=1.0).due(0.0)
    with pytest.raises(ValueError):
        RefreshPacer(share=0)
