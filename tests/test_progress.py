"""Progress lines for logs (calipers.cli.progress), with a fake clock."""

import io
from types import SimpleNamespace

from calipers.cli.progress import LogCVProgress, LogProgress, format_duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_one_line_per_unit_with_elapsed_and_remaining():
    out, clock = io.StringIO(), Clock()
    log = LogProgress(out, unit="file", total=4, clock=clock)
    clock.t += 10
    log.update(1, label="a.nii.gz")
    log.update(1)  # nothing new: no line
    clock.t += 20
    log.update(2)
    clock.t += 30
    log.update(4)
    lines = out.getvalue().splitlines()
    assert lines == [
        "file 1/4 done (a.nii.gz) · 0:00:10 elapsed · about 0:00:30 left",  # 10 s per file
        "file 2/4 done · 0:00:30 elapsed · about 0:00:30 left",
        "file 4/4 done · 0:01:00 elapsed",
    ]


def test_every_throttles_but_the_last_unit_is_always_shown():
    out, clock = io.StringIO(), Clock()
    log = LogProgress(out, unit="permutation", every=10.0, clock=clock)
    for done in range(100, 1001, 100):
        clock.t += 3
        log.update(done, 1000)
    lines = out.getvalue().splitlines()
    # t = 3 (first), 15, 27 (>= 10 s after the previous line), and the last one at t = 30
    assert [ln.split(" done")[0] for ln in lines] == [
        "permutation 100/1000", "permutation 500/1000", "permutation 900/1000",
        "permutation 1000/1000"]


def test_cv_progress_lines_per_fold_and_throttled_epochs():
    out, clock = io.StringIO(), Clock()
    p = LogCVProgress(out, 2, every=30.0, clock=clock)
    p.fold_start("A", 0, 2, 50)
    for e in range(1, 51):
        clock.t += 1
        p.epoch(e, 50, 0.5)
    p.fold_end(SimpleNamespace(network="A", split=0, resumed=False))
    p.fold_end(SimpleNamespace(network="A", split=1, resumed=True))
    lines = out.getvalue().splitlines()
    assert lines[0] == "A fold 1/2: epoch 30/50, loss 0.5 · 0:00:30 elapsed"
    assert lines[1] == "fold 1/2 done (A fold 1) · 0:00:50 elapsed · about 0:00:50 left"
    assert lines[2] == "fold 2/2 done (A fold 2, resumed) · 0:00:50 elapsed"
    assert len(lines) == 3


def test_format_duration():
    assert format_duration(75.4) == "0:01:15" and format_duration(-1) == "0:00:00"
