"""Parse a PIGReward judge's chain-of-thought answer into a [`Verdict`].

The released judge (`jeongeunnn/pigreward`) was trained to answer in this shape (paper Sec. 3, docs/JUDGE.md):

```
<Dimension>: <reason> (Score 1: a, Score 2: b)      one line per dimension, 3-5 dimensions
Score 1: <sum of a>
Score 2: <sum of b>
Image 1 is better | Image 2 is better
```

Real outputs are messier: chatter before and after, markdown, full-width characters, sums written as `3+4+1+1=9`,
stated totals that are not the sum of the dimension lines, a verdict that contradicts the totals, and degenerate loops
("Score 1: 2 / Score 2: 2" repeated until the token limit). This module never raises on any text and says exactly
what it found in `Verdict.status`.

Decision rule (documented because the paper only says "decision = larger total; equal totals = tie"):

1. If the answer degenerates into a repetition loop *before* it names a winner, there is no decision
   (`status="degenerate_loop"`, `winner=None`). A loop *after* a complete answer is trailing junk and is ignored.
2. Otherwise the winner is read from the totals **recomputed from the dimension lines**: the per-dimension scores are
   the reasoned evidence, while the stated totals and the verdict line are where a judge's arithmetic slips and
   position bias show up. Without dimension lines, the stated totals decide; without those, the verdict line does.
3. `status` reports any disagreement (`inconsistent_totals`, `verdict_contradicts_totals`, `no_verdict`) so that a
   caller can count it, log it or refuse the sample (see `reward.pigreward.JudgeSettings.accept`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import asdict, dataclass, field

STATUSES = (
    "ok",
    "inconsistent_totals",
    "verdict_contradicts_totals",
    "degenerate_loop",
    "no_verdict",
    "unparseable",
)

_NUM = r"[-+]?\d+(?:\.\d+)?"
_LABEL = r"(?:score\s*(?:for\s*)?(?:image\s*)?|image\s*)"  # "Score 1", "Score for Image 1", "Image 1"
# "(Score 1: 3, Score 2: 4)", "[score1=3; score2=4]", "(Score 1: 3/5 and Score 2: 4/5)", "(Image 1: 3, Image 2: 4)"
_SCORES = (
    rf"{_LABEL}1\s*[:=]?\s*(?P<a>{_NUM})(?:\s*/\s*\d+)?\s*[,;/|]?\s*(?:and\s*)?"
    rf"{_LABEL}2\s*[:=]?\s*(?P<b>{_NUM})(?:\s*/\s*\d+)?"
)
_HEAD = r"^(?P<name>[^:\n]{1,80}?)\s*(?::|\s-\s|\s–\s|\s—\s)\s*(?P<reason>.*?)\s*"
_DIMENSIONS = (
    re.compile(rf"{_HEAD}[(\[]\s*{_SCORES}\s*[)\]]\s*[.;,]?$", re.I),  # the paper's form: scores in parentheses
    re.compile(rf"{_HEAD}(?<=[.,;:|\-—–])\s*{_SCORES}\s*[.;,]?$", re.I),  # "Colour: warm. Score 1: 4, Score 2: 2"
)
# Names that make a "dimension-shaped" line a totals line instead ("Total: Score 1: 9, Score 2: 7").
_NOT_A_DIMENSION = re.compile(r"(?:total|sum|final)(?:\s*scores?)?|(?:total\s*)?(?:score|image)\s*[12]", re.I)
# "Score 1: 9", "Total score for Image 2 = 3+4+1+1=9", "Score 1: 2 / Score 2: 2" (both on one line)
_TOTAL = re.compile(
    rf"(?:(?:total\s*)?(?:score|total)\s*(?:for\s*|of\s*)?(?:image\s*)?(?P<idx>[12])|image\s*(?P<idx2>[12])\s*"
    rf"(?:total\s*)?score)\s*(?:total|sum)?\s*[:=]\s*"
    rf"(?P<expr>{_NUM}(?:\s*\+\s*{_NUM})*(?:\s*=\s*{_NUM})?)(?:\s*/\s*\d+)?",
    re.I,
)
_WINNER_PATTERNS = (
    re.compile(
        r"image\s*(?P<idx>[12])\s*(?:is|was)\s*(?:the\s*)?(?:(?:clearly|slightly|much|more|overall|definitely)\s*)*"
        r"(?:better|preferred|superior|winner)|image\s*(?P<idx2>[12])\s*wins\b",
        re.I,
    ),
    re.compile(r"(?:better|preferred|winning|chosen)\s*image\s*(?:is|:)?\s*(?:image\s*)?(?P<idx>[12])\b", re.I),
    re.compile(
        r"(?:winner|verdict|final\s*answer|answer|decision)\s*(?:is\s*)?[:=]?\s*(?:image\s*)?(?P<idx>[12])\b", re.I
    ),
    re.compile(r"\bi\s*(?:would\s*)?(?:prefer|choose|pick)\s*image\s*(?P<idx>[12])\b", re.I),
)
_TIE = re.compile(
    r"\b(?:it'?s\s*a\s*tie|tie|draw|equally\s*(?:good|preferred|matched|appealing)|both\s*(?:images\s*)?are\s*equal(?:ly\s*good)?"
    r"|neither\s*(?:image\s*)?is\s*better|no\s*clear\s*winner)\b",
    re.I,
)
_BULLET = re.compile(r"^\s*(?:[-*•>#]+|\d+[.)])\s*")
_TOKEN = re.compile(r"\S+")
_MAX_PERIOD = 64  # longest repeated unit (in whitespace tokens) that counts as a loop
_MIN_LOOP_TOKENS = 12


@dataclass
class Dimension:
    """One user-specific evaluation dimension as the judge scored it."""

    name: str
    reason: str
    score_1: float
    score_2: float


@dataclass
class Verdict:
    """What a judge answer says, and how far it can be trusted.

    Attributes:
        dimensions: the dimension lines, in order.
        total_1, total_2: totals recomputed from the dimension lines (`None` without dimension lines).
        stated_total_1, stated_total_2: the totals the judge wrote (`None` where it wrote none).
        stated_winner: the winner the verdict line names (1, 2, 0 for a tie, `None` without a verdict line).
        winner: the decision (1, 2, 0 for a tie, `None` when no decision can be made); see the module docstring.
        status: one of `STATUSES`.
        loop_at: character offset where a repetition loop starts, if any.
        template_id: the judge template that produced the answer (filled in by the caller).
        attempts: 2 when the answer came from a retry after a failed first answer.
        text: the raw answer (filled in by the caller, for logs).
    """

    dimensions: list[Dimension] = field(default_factory=list)
    total_1: float | None = None
    total_2: float | None = None
    stated_total_1: float | None = None
    stated_total_2: float | None = None
    stated_winner: int | None = None
    winner: int | None = None
    status: str = "unparseable"
    loop_at: int | None = None
    template_id: str | None = None
    attempts: int = 1
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def preference_for_1(self) -> float | None:
        """1.0 if image 1 wins, 0.0 if image 2 wins, 0.5 for a tie, `None` without a decision."""
        return None if self.winner is None else {1: 1.0, 2: 0.0, 0: 0.5}[self.winner]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        data = dict(data)
        data["dimensions"] = [Dimension(**d) for d in data.get("dimensions", [])]
        return cls(**data)


def _normalize(text: str) -> str:
    # NFKC folds full-width digits, colons and letters ("Ｓｃｏｒｅ １：３") into ASCII; markdown emphasis is noise.
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("**", "").replace("__", "").replace("`", "")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _evaluate_total(expr: str) -> float | None:
    """`"9"` -> 9; `"3+4+1+1=9"` -> 9 (the judge's stated result); `"3 + 4"` -> 7."""
    if "=" in expr:
        return _number(expr.rsplit("=", 1)[1].strip())
    terms = [_number(t.strip()) for t in expr.split("+")]
    return None if any(t is None for t in terms) else sum(terms)


def _compare(a: float | None, b: float | None) -> int | None:
    if a is None or b is None:
        return None
    if math.isclose(a, b, abs_tol=1e-6):
        return 0
    return 1 if a > b else 2


def find_loop(text: str) -> int | None:
    """Character offset where a repetition loop starts, or `None`.

    A loop is a unit of 1 to 64 whitespace tokens repeated back to back until it covers at least
    `max(3 * unit, 12)` tokens beyond its first occurrence: "Score 1: 2 / Score 2: 2" four times qualifies, three
    dimension lines with different names never do. The check is linear in the text length for each unit size.
    """
    spans = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]
    ids: dict[str, int] = {}
    tokens = [ids.setdefault(tok.lower(), len(ids)) for _, tok in spans]
    n = len(tokens)
    best: int | None = None
    for period in range(1, min(_MAX_PERIOD, n // 2) + 1):
        need = max(3 * period, _MIN_LOOP_TOKENS)
        run = 0
        for i in range(period, n):
            run = run + 1 if tokens[i] == tokens[i - period] else 0
            if run >= need:
                start = i - run + 1 - period  # first token of the first occurrence of the unit
                if best is None or start < best:
                    best = start
                break
    return None if best is None else spans[best][0]


# Words that may surround a verdict on its own line.
_FILLER = set(
    "final verdict answer winner overall therefore so thus conclusion in my result the is than image decision "
    "clearly better it s a".split()
)


def _standalone(line: str, hit: re.Match) -> bool:
    """Whether the verdict phrase is the whole line ("**Final verdict:** Image 2 is better than Image 1.")."""
    rest = line[: hit.start()] + " " + line[hit.end() :]
    return all(word in _FILLER for word in re.findall(r"[a-z]+", rest.lower()))


def _unit_end(text: str, start: int) -> int:
    """End offset of the first occurrence of the repeated unit that starts at `start` (loosely: the line end)."""
    newline = text.find("\n", start)
    return len(text) if newline == -1 else newline


def parse_verdict(text: str) -> Verdict:
    """Parse one judge answer. Never raises; see the module docstring for the decision rule.

    Args:
        text: the generated answer (any string, possibly empty, truncated or in a loop).

    Returns:
        A [`Verdict`]; `status` says whether it is `ok` or what is wrong with it.
    """
    if not isinstance(text, str):
        return Verdict(status="unparseable")
    text = _normalize(text)
    loop_at = find_loop(text)
    body = text if loop_at is None else text[: _unit_end(text, loop_at)]

    dimensions: list[Dimension] = []
    stated: dict[int, float] = {}
    winner_hits: list[tuple[int, int]] = []  # (position, winner)
    offset = 0
    for raw_line in body.split("\n"):
        line_start = offset
        offset += len(raw_line) + 1
        line = _BULLET.sub("", raw_line).strip()
        if not line:
            continue
        dim = _DIMENSIONS[0].match(line) or _DIMENSIONS[1].match(line)
        if dim and not _NOT_A_DIMENSION.fullmatch(dim.group("name").strip()):
            a, b = _number(dim.group("a")), _number(dim.group("b"))
            if a is not None and b is not None:
                dimensions.append(Dimension(dim.group("name").strip(), dim.group("reason").strip(), a, b))
                continue
        for total in _TOTAL.finditer(line):
            value = _evaluate_total(total.group("expr"))
            if value is not None:
                stated[int(total.group("idx") or total.group("idx2"))] = value
        for pattern in _WINNER_PATTERNS:
            for hit in pattern.finditer(line):
                idx = int(hit.groupdict().get("idx") or hit.group("idx2"))
                winner_hits.append((_standalone(line, hit), line_start + hit.end(), idx))
        for hit in _TIE.finditer(line):
            winner_hits.append((_standalone(line, hit), line_start + hit.end(), 0))

    verdict = Verdict(dimensions=dimensions, loop_at=loop_at)
    verdict.stated_total_1, verdict.stated_total_2 = stated.get(1), stated.get(2)
    # The last verdict line that says nothing else wins over verdict phrases inside chatter ("Image 2 is better in
    # lighting, but..."); without one, the last phrase counts.
    verdict.stated_winner = max(winner_hits)[2] if winner_hits else None
    if dimensions:
        verdict.total_1 = sum(d.score_1 for d in dimensions)
        verdict.total_2 = sum(d.score_2 for d in dimensions)

    if loop_at is not None and verdict.stated_winner is None:
        verdict.status = "degenerate_loop"
        return verdict

    recomputed = _compare(verdict.total_1, verdict.total_2)
    from_stated = _compare(verdict.stated_total_1, verdict.stated_total_2)
    from_totals = recomputed if dimensions else from_stated
    verdict.winner = from_totals if from_totals is not None else verdict.stated_winner
    stated_disagree = bool(dimensions) and any(
        said is not None and not math.isclose(said, total, abs_tol=1e-6)
        for said, total in ((verdict.stated_total_1, verdict.total_1), (verdict.stated_total_2, verdict.total_2))
    )

    if verdict.winner is None:
        verdict.status = "unparseable"
    elif verdict.stated_winner is None:
        verdict.status = "no_verdict"
    elif from_totals is not None and verdict.stated_winner != from_totals:
        # The verdict follows the judge's own (wrong) arithmetic: the totals are the problem, not the verdict.
        follows_stated = stated_disagree and verdict.stated_winner == from_stated
        verdict.status = "inconsistent_totals" if follows_stated else "verdict_contradicts_totals"
    elif stated_disagree:
        verdict.status = "inconsistent_totals"
    else:
        verdict.status = "ok"
    return verdict
