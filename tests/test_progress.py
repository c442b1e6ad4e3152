"""One progress bar per public call: nested bars are transient (``leave=False``)."""

import io

import pytest

import roleprobe as rp
from roleprobe.core import progress
from roleprobe.core.progress import bar, nested, set_progress
from roleprobe.data.benchmarks import MultipleChoice

WORDS = ["apple", "river", "stone", "cloud", "paper", "music", "glass", "horse"]


@pytest.fixture
def bars(monkeypatch):
    """Every roleprobe bar created during the test (drawn into a buffer, not the terminal)."""
    made: list = []
    init = progress._Bar.__init__

    def recording(self, *args, **kwargs):
        kwargs.setdefault("file", io.StringIO())
        init(self, *args, **kwargs)
        self.was_shown = not self.disable
        made.append(self)

    monkeypatch.setattr(progress._Bar, "__init__", recording)
    set_progress(True)
    yield made
    set_progress(True)


def left(made: list) -> list[str]:
    """The descriptions of the shown bars that stay on screen after they close."""
    return [b.desc for b in made if b.was_shown and b.leave]


@pytest.fixture(scope="module")
def prompts():
    roles = {
        "marker": [f"zzzz {w} zzzz" for w in WORDS],
        "other": [f"qqqq {w}" for w in WORDS],
    }
    return rp.custom_prompts(roles, [f"Tell me about the {w}." for w in WORDS])


FAST = dict(layers=[1], positions="last", batch_size=4)


def test_a_bar_inside_another_is_transient_and_closing_forgets_inner_bars(bars):
    with bar(total=1, desc="outer") as outer:
        assert nested()
        for _ in bar(range(3), desc="inner"):
            pass
        broken = bar(range(3), desc="abandoned")  # never finished (e.g. an error)
        next(iter(broken))
        assert nested()
        outer.update()
    assert not nested()  # the outer bar's close forgot the abandoned inner one
    assert [b.leave for b in bars] == [True, False, False]
    assert left(bars) == ["outer"]
    assert bar(range(1), desc="next").leave is True  # the next call is top-level again


def test_an_error_inside_an_outer_bar_does_not_leave_later_bars_nested(bars):
    with pytest.raises(RuntimeError), bar(total=2, desc="outer"):
        for _ in bar(range(3), desc="inner"):
            raise RuntimeError("boom")
    assert not nested()


def test_hidden_bars_never_count_as_outer(bars):
    with bar(total=1, enabled=False, desc="hidden"):
        assert not nested()
        inner = bar(range(1), desc="shown")
        assert inner.leave is True
        list(inner)
    set_progress(False)
    with bar(total=1, desc="globally off"):
        assert not nested()


def test_an_explicit_leave_wins(bars):
    with bar(total=1, desc="outer"):
        assert bar(range(1), desc="inner", leave=True).leave is True


def test_compute_directions_leaves_one_bar(tiny_model, prompts, bars):
    rp.compute_directions(tiny_model, source=prompts, **FAST)
    # before: one bar per prompt set (base + 2 roles), all left on screen
    assert len(bars) == 4
    assert left(bars) == ["directions"]
    assert not nested()


def test_separation_auroc_leaves_one_bar(tiny_model, prompts, bars):
    train, held = prompts.split(0.5, seed=0)
    rd = rp.compute_directions(tiny_model, source=train, progress=False, **FAST)
    bars.clear()
    rp.separation_auroc(tiny_model, rd, held)
    assert len(bars) == 4 and left(bars) == ["held-out AUROC"]


def test_split_half_stability_leaves_one_bar(tiny_model, prompts, bars):
    rp.split_half_stability(tiny_model, prompts, **FAST)
    # 1 outer + 2 halves x (1 directions bar + 3 prompt-set bars); before: 6 left
    assert len(bars) == 9
    assert left(bars) == ["split-half"]
    bars.clear()
    rp.split_half_stability(tiny_model, prompts, progress=False, **FAST)
    assert len(bars) == 9 and not any(b.was_shown for b in bars)


def test_evaluate_leaves_one_bar_alone_and_none_inside_another(tiny_model, bars):
    items = rp.load_benchmark("builtin").items.head(4)
    bench = MultipleChoice(items, "four")
    rp.evaluate(tiny_model, bench, batch_size=2)
    assert left(bars) == ["evaluate four"]
    bars.clear()
    with bar(total=2, desc="my loop") as outer:
        for _ in range(2):
            rp.evaluate(tiny_model, bench, batch_size=2)
            outer.update()
    assert left(bars) == ["my loop"]
