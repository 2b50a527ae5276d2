"""fleet/ingest/sequence.py against a reference that keeps every number it has seen.

The reference is the rule of docs/protocol.md, "Streams", said the slow way: a number above the
highest known is new; a number at or above the stream's start that has not been seen is late; any
other is a duplicate. The missing numbers are those from the start to the highest known that
were never seen. StreamState must give the same verdicts and the same missing numbers with its
bounded state (the highest number and a list of gap ranges), also when it is written to the
database between batches (only what `changed` lists) and read back.
"""

from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleet.ingest.sequence import Gap, StreamState, Verdict

SEQS = st.integers(min_value=0, max_value=40)  # small: collisions, gaps and late arrivals are common
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("accept"), SEQS),
        st.tuples(st.just("start_at"), st.integers(min_value=0, max_value=45)),  # a birth's next_seq
        st.tuples(st.just("end_at"), st.integers(min_value=0, max_value=45)),  # a later birth's prev
    ),
    max_size=80,
)


@dataclass
class Reference:
    seen: set[int] = field(default_factory=set)
    highest: int = -1  # the highest number known to belong to the stream
    start: int = 0

    def accept(self, seq: int) -> Verdict:
        if seq > self.highest:
            self.seen.add(seq)
            self.highest = seq
            return Verdict.NEW
        if seq >= self.start and seq not in self.seen:
            self.seen.add(seq)
            return Verdict.LATE
        return Verdict.DUPLICATE

    def start_at(self, first: int) -> None:
        if first > 0:
            self.start = max(self.start, first)
            self.highest = max(self.highest, first - 1)

    def end_at(self, next_seq: int) -> None:
        if next_seq > 0:
            self.highest = max(self.highest, next_seq - 1)

    def missing(self) -> set[int]:
        return set(range(self.start, self.highest + 1)) - self.seen


def missing(state: StreamState) -> set[int]:
    return {n for gap in state.gaps for n in range(gap.first, gap.last + 1)}


def apply(state: StreamState | Reference, op: str, value: int) -> Verdict | None:
    if op == "accept":
        return state.accept(value)
    getattr(state, op)(value)
    return None


def assert_well_formed(state: StreamState) -> None:
    firsts = [g.first for g in state.gaps]
    assert firsts == sorted(firsts), "gaps are kept in order"
    assert all(g.first <= g.last for g in state.gaps), "no empty gap stays open"
    for lower, upper in zip(state.gaps, state.gaps[1:], strict=False):
        assert lower.last < upper.first, "gaps never overlap"
    if state.gaps:
        assert state.max_seq is not None and state.gaps[-1].last <= state.max_seq


@settings(max_examples=600)  # about a second; 100 missed an off-by-one at a gap's edge
@given(OPS)
@example([("accept", 0), ("accept", 6), ("start_at", 5)])  # a gap that ends at the start keeps it
def test_verdicts_and_missing_numbers_match_the_reference(ops: list[tuple[str, int]]) -> None:
    state, reference = StreamState(), Reference()
    for op, value in ops:
        assert apply(state, op, value) == apply(reference, op, value), (op, value)
        assert_well_formed(state)
        assert missing(state) == reference.missing()
        assert (state.max_seq if state.max_seq is not None else -1) == reference.highest


class StoredStream:
    """The stream as the database holds it between batches: max_seq and gap rows, written from
    what `changed` lists after each batch (as fleet/ingest/store.py does), read back as open rows."""

    def __init__(self) -> None:
        self.max_seq: int | None = None
        self.rows: dict[int, tuple[int, int]] = {}  # open gap rows: id -> (first, last)
        self.next_id = 1

    def load(self) -> StreamState:
        gaps = [Gap(first, last, row_id) for row_id, (first, last) in sorted(self.rows.items(),
                                                                            key=lambda item: item[1])]
        return StreamState(max_seq=self.max_seq, gaps=gaps)

    def save(self, state: StreamState) -> None:
        for gap in state.changed:
            if gap.id is None:
                if gap.first <= gap.last:
                    self.rows[self.next_id] = (gap.first, gap.last)
                    self.next_id += 1
            elif gap.first <= gap.last:
                self.rows[gap.id] = (gap.first, gap.last)
            else:
                del self.rows[gap.id]  # closed
        state.changed.clear()
        self.max_seq = state.max_seq


@settings(max_examples=300)
@given(OPS, st.lists(st.integers(min_value=1, max_value=10), min_size=1, max_size=20))
def test_a_stream_written_back_after_every_batch_judges_as_one_kept_in_memory(
        ops: list[tuple[str, int]], batch_sizes: list[int]) -> None:
    stored, reference = StoredStream(), Reference()
    position = 0
    for size in batch_sizes * 10:
        if position >= len(ops):
            break
        state = stored.load()
        for op, value in ops[position : position + size]:
            assert apply(state, op, value) == apply(reference, op, value), (op, value)
        stored.save(state)
        position += size
        assert {n for first, last in stored.rows.values() for n in range(first, last + 1)} == reference.missing()


@given(st.lists(SEQS, max_size=60))
def test_a_replay_of_everything_accepted_is_all_duplicates_and_changes_nothing(seqs: list[int]) -> None:
    state = StreamState()
    for seq in seqs:
        state.accept(seq)
    max_before, gaps_before = state.max_seq, [(g.first, g.last) for g in state.gaps]
    state.changed.clear()
    assert {state.accept(seq) for seq in seqs} <= {Verdict.DUPLICATE}
    assert (state.max_seq, [(g.first, g.last) for g in state.gaps]) == (max_before, gaps_before)
    assert state.changed == []


@given(st.permutations(list(range(30))))
def test_every_number_in_any_order_leaves_no_gap(order: list[int]) -> None:
    state = StreamState()
    verdicts = [state.accept(seq) for seq in order]
    assert Verdict.DUPLICATE not in verdicts
    assert state.gaps == [] and state.max_seq == 29


def test_a_late_number_inside_a_gap_splits_it_and_the_new_half_is_listed_as_changed() -> None:
    state = StreamState()
    state.accept(0)
    state.accept(10)  # 1..9 missing
    (gap,) = state.gaps
    gap.id = 7  # as if stored
    state.changed.clear()
    assert state.accept(4) is Verdict.LATE
    assert [(g.first, g.last, g.id) for g in state.gaps] == [(1, 3, 7), (5, 9, None)]
    assert [(g.first, g.last) for g in state.changed] == [(5, 9), (1, 3)]


def test_a_gap_filled_to_its_last_number_is_listed_closed() -> None:
    state = StreamState()
    state.accept(0)
    state.accept(2)
    state.changed.clear()
    assert state.accept(1) is Verdict.LATE
    assert state.gaps == [] and [(g.first > g.last) for g in state.changed] == [True]


def test_a_birth_s_next_seq_closes_what_lies_below_it() -> None:
    state = StreamState()
    state.end_at(5)  # a later birth says 0..4 were stamped: all missing
    assert [(g.first, g.last) for g in state.gaps] == [(0, 4)]
    state.start_at(3)  # the stream's own birth: it began at 3
    assert [(g.first, g.last) for g in state.gaps] == [(3, 4)]
    assert state.accept(1) is Verdict.DUPLICATE
    assert state.accept(3) is Verdict.LATE
