"""What a run learns from and what judges it: decided once, in one read, the same way for every method.

1. The one held-out split (splits.py): held-out rated drafts and picks judge versions and never train.
2. The rest falls in two halves, side by side (halves): each gets half of the liked drafts and half of
   the disliked ones, give or take one, so a few liked drafts are never left almost all to one half
   by chance. The *teaching* half trains the candidate
   (rated drafts for kto, liked ones for sft, picks for dpo) and fits the teacher, the judge whose
   picks a kto run also learns from. The *examining* half trains nothing: it fits the examiner, the
   judge whose verdict promotes (leaving out any draft the serving version's line trained on: a run
   starts from its adapter). So the judge that decides learned from ratings the candidate never
   saw, and a teacher trusted by chance cannot pass its noise through the exam. A kto run trains
   at most kto_disliked_per_liked disliked drafts per liked one (in_proportion); the rest wait.
3. Before anything trains, the examiner must rank the held-out ratings as the writers did: a
   one-sided permutation p at most the share of gate_alpha left for this test, and an accuracy of
   at least min_judge_accuracy (with thousands of ratings a barely better judge would pass on p
   alone). The k-th test since the last promotion gets alpha / (k (k + 1)); these shares sum to
   alpha, so a studio whose ratings mean nothing stays on its base with probability at least
   1 - alpha however many runs it has (a union bound: it needs no independence between runs). If
   the examiner fails, nothing trains (NoConsistentPreference).
4. Where no honest exam exists (no disliked drafts or picks to fit an examiner on, or too few held
   out), the run still trains, but the gate leaves the candidate undecided: an admin may serve it
   by hand. Held-out perplexity alone promoted a fine-tune on shuffled ratings, so it promotes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from storage import registry
from studio.errors import StudioError
from studio.learning.config import TrainingConfig
from studio.learning.dataset import Example, PreferencePair
from studio.learning.judge import Judge, read
from studio.learning.neighbours import WordVectors
from studio.learning.significance import accuracy, permutation_p_value
from studio.learning.samples import sample_requests
from studio.learning.splits import (NotEnoughDrafts, PreferenceSplit, RatedSplit, build_preference_split,
                                    build_rated_split, draw, held_out_key, lend_held_out)

NOTHING_TO_LEARN = "Nothing to learn yet"
PICK_PROMPTS = 8  # the newest distinct training prompts the teacher's picks are written of


class NotEnoughRatings(StudioError):
    """KTO needs drafts on both sides of the writers' judgement to learn from."""


class NoConsistentPreference(StudioError):
    """The examiner cannot rank the held-out ratings as the writers did: training now would learn
    noise, so it does not start. The run spent one of the gate's tests."""

    outcome = "no_preference"


@dataclass(frozen=True)
class HeldOut:
    """What the gate judges on: held-out drafts, and the pairs among them (ids: liked, disliked)."""

    drafts: list[Example]
    pairs: list[tuple[int, int]]
    clusters: list[list[tuple[int, int]]]  # pairs grouped for shuffling: a template's rated drafts, or one prompt's picks
    liked: list[int]  # held-out liked and chosen drafts: the perplexity guard scores these


def share_of_alpha(alpha: float, test: int) -> float:
    """The share of alpha the test-th test since the last promotion may spend (1, 2, ...)."""
    return alpha / (test * (test + 1))


def smallest_p_value(held: HeldOut) -> float:
    """The p-value of a perfect ranking of the held-out pairs: one arrangement of the labels in
    C(n, k) per cluster. Above the test's alpha, no judge could be trusted on them, however good."""
    p = 1.0
    for cluster in held.clusters:
        liked, disliked = {a for a, _ in cluster}, {b for _, b in cluster}
        p /= math.comb(len(liked) + len(disliked), len(liked))
    return p


def halves(labelled: dict[int, tuple[Example, bool]]) -> set[int]:
    """The examining half of these drafts (ids), split side by side: in the order they were written,
    one of each two liked drafts examines and the other teaches, which one by a fixed draw, and the
    same for disliked ones; an odd one out teaches. A coin per draft left 2 of 11 liked drafts to
    teach in one benchmark round, fewer than a fine-tune learns a word from. Held-out drafts are paired
    too (and then left out), and new drafts come last, so a draft keeps its half when more are held
    out or rated, unless a rating moves a draft between sides."""
    examining = set()
    for side in (True, False):
        ordered = sorted(i for i, (_, up) in labelled.items() if up == side)
        for first, second in zip(ordered[::2], ordered[1::2]):
            examining.add(first if draw(f"examine:{held_out_key(labelled[first][0])}") < 0.5 else second)
    return examining


@dataclass
class Exam:
    """The examiner and how it ranked the held-out ratings before anything trained."""

    judge: Judge | None
    scores: dict[int, float] = field(default_factory=dict)  # on the held-out drafts
    accuracy: float = float("nan")
    p_value: float = float("nan")
    undecided: str = ""  # why no exam can decide (the run trains; the candidate is left undecided)


@dataclass
class Plan:
    method: str  # kto, sft or dpo
    note: str  # what the run learns from, in words
    train: list[Example]  # kto: liked and disliked drafts; sft: liked drafts; dpo: none (pairs)
    pairs: list[PreferencePair]  # dpo: picks to learn from
    liked: Callable[[Example], bool]
    held: HeldOut
    exam: Exam
    test: int  # which test since the last promotion this run is
    alpha: float  # the share of gate_alpha this test may spend
    teacher: Judge | None  # picks drafts to learn from (kto), when it ranks the examining half as the writers did
    requests: list[dict[str, Any]]  # held-out prompts the gate's samples are written of
    pick_requests: list[dict[str, Any]]  # training prompts the teacher's picks are written of
    examining: list[int]  # the drafts whose ratings the examiner learned from

    @property
    def train_liked(self) -> int:
        """How many of the training drafts writers liked."""
        return sum(map(self.liked, self.train))

    @property
    def train_draft_ids(self) -> list[int]:
        return sorted({e.draft_id for e in self.train} | {d for p in self.pairs for d in (p.chosen.draft_id,
                                                                                         p.rejected.draft_id)})


def _labelled(rated: list[Example], pairs: list[PreferencePair], liked, disliked,
              exclude: set[int]) -> dict[int, tuple[Example, bool]]:
    """Drafts with a side, from ratings and from picks (chosen liked, rejected not); a rating wins."""
    out: dict[int, tuple[Example, bool]] = {}
    for pair in pairs:
        out.setdefault(pair.chosen.draft_id, (pair.chosen, True))
        out.setdefault(pair.rejected.draft_id, (pair.rejected, False))
    for e in rated:
        if liked(e) or disliked(e):
            out[e.draft_id] = (e, liked(e))
    return {i: item for i, item in out.items() if i not in exclude}


def _fit(labelled: dict[int, tuple[Example, bool]], vectors: WordVectors | None, nearest: int) -> Judge | None:
    sides = {label for _, label in labelled.values()}
    if sides != {True, False}:
        return None
    label = {i: value for i, (_, value) in labelled.items()}
    return Judge.fit([e for e, _ in labelled.values()], lambda e: label[e.draft_id], vectors, nearest)


def _template_clusters(labelled: dict[int, tuple[Example, bool]]) -> list[list[tuple[int, int]]]:
    clusters = []
    for template in sorted({e.template_id for e, _ in labelled.values()}):
        group = [(e.draft_id, value) for e, value in labelled.values() if e.template_id == template]
        cluster = [(a, b) for a, up in group if up for b, down in group if not down]
        if cluster:
            clusters.append(cluster)
    return clusters


def build_held_out(rated: list[Example], pairs: list[PreferencePair], liked, disliked) -> HeldOut:
    """The gate's pairs: each held-out pick (chosen over rejected, one cluster per prompt), and every
    held-out liked draft against every held-out disliked draft of the same template (like for like)."""
    in_picks = {d for p in pairs for d in (p.chosen.draft_id, p.rejected.draft_id)}
    by_prompt: dict[str, list[tuple[int, int]]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.chosen.context, []).append((pair.chosen.draft_id, pair.rejected.draft_id))
    labelled = _labelled([e for e in rated if e.draft_id not in in_picks], [], liked, disliked, set())
    clusters = list(by_prompt.values()) + _template_clusters(labelled)
    drafts = {e.draft_id: e for e, _ in labelled.values()}
    for pair in pairs:
        drafts.setdefault(pair.chosen.draft_id, pair.chosen)
        drafts.setdefault(pair.rejected.draft_id, pair.rejected)
    return HeldOut(drafts=list(drafts.values()), pairs=[p for cluster in clusters for p in cluster], clusters=clusters,
                   liked=sorted({a for a, _ in (p for cluster in clusters for p in cluster)}
                                | {i for i, (_, up) in labelled.items() if up}))


def _lend_held_out(rated: RatedSplit, liked, config: TrainingConfig) -> RatedSplit:
    """Liked drafts alone: nothing can examine the run, so new held-out liked drafts may train while
    training has too few (splits.lend_held_out)."""
    train, held = lend_held_out(rated.train, rated.held_out, rated.new, liked, config.min_train, config.gate_min_liked)
    return dataclasses.replace(rated, train=train, held_out=held)


def _picks(session, config: TrainingConfig, required: bool) -> tuple[PreferenceSplit | None, str]:
    """The picks split, or None and why when there are too few (an error when the method needs them)."""
    try:
        return build_preference_split(session, held_out_fraction=config.held_out_fraction,
                                      min_held_out=config.min_held_out, min_pairs=config.min_pairs,
                                      max_per_writer=config.max_per_writer), ""
    except StudioError as exc:
        if required:
            raise
        return None, str(exc)


def _method(config: TrainingConfig, picks, too_few_picks: str, teach: list[Example], liked,
            disliked) -> tuple[str, str]:
    """config.method, or for auto the strongest signal the writers have given: picks (dpo), rated
    drafts on both sides (kto), liked drafts alone (sft); and why, when auto chose."""
    if config.method != "auto":
        return config.method, ""
    if picks is not None:
        return "dpo", ""
    if any(map(liked, teach)) and any(map(disliked, teach)):
        return "kto", f"Learning from rated drafts, liked and disliked: {too_few_picks}"
    return "sft", f"Learning from liked drafts: {too_few_picks}"


def _training_data(method: str, config: TrainingConfig, teach: list[Example], teach_pairs: list[PreferencePair],
                   liked, disliked, usable: int) -> tuple[list[Example], list[PreferencePair]]:
    """What the method trains on, from the teaching side; usable: every liked draft, to say how many
    more a liked-only run needs."""
    if method == "dpo":
        if not teach_pairs:
            raise StudioError("Every pick on the training side fell in the half kept to examine the result: "
                              "compare candidates for a few more prompts.")
        return [], teach_pairs
    if method == "sft":
        train = [e for e in teach if liked(e)]
        if len(train) < config.min_train:
            missing = math.ceil((config.min_train - len(train)) / (1 - config.held_out_fraction))
            raise NotEnoughDrafts(usable, usable + missing, min_stars=config.min_stars)
        return train, []
    train = [e for e in teach if liked(e) or disliked(e)]
    up = sum(map(liked, train))
    if up < 1 or len(train) - up < 1 or len(train) < config.min_train:
        raise NotEnoughRatings(
            f"Learning from ratings needs drafts on both sides: {up} rated {config.min_stars}+ and "
            f"{len(train) - up} rated {config.max_disliked_stars} or less are there to train on (held-out drafts "
            f"and those kept to examine the result aside), and a run needs at least one of each and "
            f"{config.min_train} in all. Rate more drafts, the ones you like and the ones you do not.")
    return in_proportion(train, liked, config.kto_disliked_per_liked), []


def in_proportion(train: list[Example], liked, disliked_per_liked: float) -> list[Example]:
    """Every liked draft and at most disliked_per_liked disliked ones for each (0: all of them), the
    same ones run after run (a fixed draw per draft). Many disliked drafts against a few liked ones
    push the model away from the drafts it writes rather than toward what writers like."""
    if not disliked_per_liked:
        return train
    down = sorted((e for e in train if not liked(e)), key=lambda e: draw(f"kto-disliked:{held_out_key(e)}"))
    kept = {e.draft_id for e in down[:max(1, int(disliked_per_liked * sum(map(liked, train))))]}
    return [e for e in train if liked(e) or e.draft_id in kept]


def _exam(examiner: Judge | None, held: HeldOut, config: TrainingConfig, alpha: float, test: int) -> Exam:
    if examiner is None:
        return Exam(None, undecided=(
            "No judge can examine this candidate: beside the drafts it trained on and those held out, too few "
            "ratings are left to learn both what writers like and what they do not (disliked drafts or picks), and "
            "how likely a version finds liked drafts alone once promoted a fine-tune on shuffled ratings. Rate more "
            "drafts, the ones you do not like too, or serve this version by hand."))
    scores = dict(zip([e.draft_id for e in held.drafts], examiner.scores([read(e) for e in held.drafts])))
    liked, disliked = {a for a, _ in held.pairs}, {b for _, b in held.pairs}
    if len(liked) < config.gate_min_liked or len(disliked) < config.gate_min_disliked or \
            smallest_p_value(held) > alpha:
        more = math.ceil(max(config.gate_min_liked - len(liked), config.gate_min_disliked - len(disliked), 2)
                         / config.held_out_fraction)
        return Exam(examiner, scores, undecided=(
            f"Not enough held-out ratings to judge: {len(liked)} liked and {len(disliked)} disliked drafts are held "
            f"out with a counterpart of the same template or prompt; the gate needs at least {config.gate_min_liked} "
            f"and {config.gate_min_disliked}, and enough that a perfect ranking of them would be convincing "
            f"(p <= {alpha:.2g}, this being test {test} since the last promotion). Rate about {more} more drafts "
            f"({config.held_out_fraction:.0%} are held out), or serve this version by hand."))
    return Exam(examiner, scores, accuracy(scores, held.pairs), permutation_p_value(scores, held.clusters, config.seed))


def _learned(method: str, train: list[Example], pairs: list[PreferencePair], liked, waiting: int) -> str:
    """What the run trains on, in words."""
    if method == "dpo":
        return f"{len(pairs)} picks"
    up = sum(map(liked, train))
    if method == "sft":
        return f"{up} liked drafts"
    return f"{up} liked and {len(train) - up} disliked drafts" + (
        f" ({waiting} more disliked wait for more liked ones)" if waiting else "")


def plan_run(session, config: TrainingConfig, vectors: WordVectors | None = None) -> Plan:
    """Everything a run needs before it trains, read in one transaction (see the module's docstring).
    vectors: the base model's word vectors, for judges that hear kinds of words (neighbours.py). Raises NotEnoughRatings / NotEnoughDrafts / a StudioError when there is too little to train on,
    NoConsistentPreference when the examiner finds no consistent preference (nothing trains)."""
    def liked(e: Example) -> bool:
        return e.stars >= config.min_stars

    def disliked(e: Example) -> bool:
        return e.stars <= config.max_disliked_stars

    rated = build_rated_split(session, held_out_fraction=config.held_out_fraction, max_per_writer=config.max_per_writer,
                              sides=((liked, config.gate_min_liked), (disliked, config.gate_min_disliked)))
    picks, too_few_picks = _picks(session, config, required=config.method == "dpo")
    if picks is None and not any(map(disliked, rated.train + rated.held_out)):
        rated = _lend_held_out(rated, liked, config)
    held = build_held_out(rated.held_out, picks.held_out if picks else [], liked, disliked)
    held_ids = {e.draft_id for e in held.drafts} | {e.draft_id for e in rated.held_out}
    train_side = [e for e in rated.train if e.draft_id not in held_ids]
    pairs = [p for p in (picks.train if picks else []) if not {p.chosen.draft_id, p.rejected.draft_id} & held_ids]
    every_pick = (picks.train + picks.held_out) if picks else []
    examines = halves(_labelled(rated.train + rated.held_out, every_pick, liked, disliked, set())).__contains__
    examine_side = [e for e in train_side if examines(e.draft_id)], [p for p in pairs if examines(p.chosen.draft_id)]
    teach = [e for e in train_side if not examines(e.draft_id)], [p for p in pairs if not examines(p.chosen.draft_id)]
    usable = sum(map(liked, rated.train + rated.held_out))
    method, why = _method(config, picks, too_few_picks, train_side, liked, disliked)
    try:
        if {up for _, up in _labelled(*examine_side, liked, disliked, exclude=held_ids).values()} != {True, False}:
            raise StudioError("nothing to fit an examiner on")
        train, train_pairs = _training_data(method, config, *teach, liked, disliked, usable)
    except StudioError:  # too few to both teach and examine: every rating teaches, and the gate will say
        examine_side = [], []  # that nothing could examine the candidate
        train, train_pairs = _training_data(method, config, train_side, pairs, liked, disliked, usable)
    trains = {e.draft_id for e in train} | {d for p in train_pairs for d in (p.chosen.draft_id, p.rejected.draft_id)}

    examining = _labelled(*examine_side, liked, disliked, exclude=trains | held_ids | registry.lineage_trained(session))
    test = registry.tests_since_promotion(session) + 1
    alpha = share_of_alpha(config.gate_alpha, test)
    exam = _exam(_fit(examining, vectors, config.judge_nearest), held, config, alpha, test)
    if not exam.undecided and (exam.p_value > alpha or exam.accuracy < config.min_judge_accuracy):
        raise NoConsistentPreference(
            f"{NOTHING_TO_LEARN}: a judge learned from {len(examining)} ratings the candidate would not train on ranks "
            f"{exam.accuracy:.0%} of {len(held.pairs)} held-out pairs as the writers did (p = {exam.p_value:.2g}; "
            f"it needs at least {config.min_judge_accuracy:.0%} and p <= {alpha:.2g}, the share of "
            f"{config.gate_alpha:g} left for test {test} since the last promotion): the ratings do not yet show a "
            "consistent preference, and training on them would learn noise. Rate more drafts; nothing was trained.")

    teacher = None
    if method == "kto" and config.judge_samples and not exam.undecided:
        teacher = _fit(_labelled(*teach, liked, disliked, exclude=held_ids), vectors, config.judge_nearest)
        clusters = _template_clusters(examining)
        scores = dict(zip(examining, teacher.scores([read(e) for e, _ in examining.values()]))) if teacher else {}
        if not clusters or not scores or permutation_p_value(scores, clusters, config.seed) > config.gate_alpha:
            teacher = None  # it could not rank ratings it never saw: its picks would teach its noise
    busy = trains | set(examining)  # once, not per draft
    waiting = sum(disliked(e) and e.draft_id not in busy for e in train_side)
    note = (f"{why} Learning by {method} from {_learned(method, train, train_pairs, liked, waiting)}; "
            f"{len(examining)} ratings kept to examine the result, {len(held.drafts)} held out.").strip()
    return Plan(method, note, train, train_pairs, liked, held, exam, test, alpha, teacher,
                sample_requests(session, [e.draft_id for e in held.drafts]),
                sample_requests(session, sorted(trains), limit=PICK_PROMPTS), sorted(examining))
