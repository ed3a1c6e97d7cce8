"""The benchmark runs end to end on a tiny model and reports every figure the README promises."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from studio import bench


@pytest.mark.e2e  # it starts processes of its own, as the benchmark does
def test_bench_reports_every_figure_side_by_side(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert bench.main(["--model", str(tiny_model_dir), "--tokens", "8", "--writers", "1,2", "--repeats", "1",
                       "--training-drafts", "8", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    single = report["single"]
    for label in ("bare", "batched", "threads", "metrics_off"):
        assert single[label]["tokens_per_s"] > 0 and single[label]["ttft_s"] > 0
    assert single["ratio"] == single[report["path"]]["ratio"]
    assert single["metrics_on_off"] == single[report["path"]]["tokens_per_s"] / single["metrics_off"]["tokens_per_s"]
    assert [(c["writers"], c["path"]) for c in report["concurrent"]] == [
        (1, "batched"), (1, "threads"), (2, "batched"), (2, "threads")]
    for c in report["concurrent"]:
        assert c["aggregate_tokens_per_s"] > 0 and "draft_ids" not in c
        assert c["aggregate_x1"] == 1.0 if c["writers"] == 1 else math.isfinite(c["aggregate_x1"])
    bound = report["decode_bound"]  # no draft streams faster than memory reads the weights
    assert bound["bandwidth_gb_s"] > 0.1 and 0 < bound["share_of_bound"] < 1
    assert bound["weight_mb"] == report["quantization"]["modes"]["none"]["weight_mb"]
    training = report["training"]
    assert training["training_drafts"] == 8  # the four concurrent runs' six drafts, and two more
    assert training["train_tokens_per_s"] > 0 and training["gate"] == "undecided"  # liked drafts alone
    assert training["trainer_peak_rss_mb"] > 0 and report["memory"]["peak_rss_mb"] > 0
    quantization = report["quantization"]
    assert list(quantization["modes"]) == ["none", "int8"] and list(quantization["ratios"]) == ["int8"]
    assert list(quantization["skipped"]) == ["int4"]  # no CPU kernel worth serving with
    assert quantization["drafts"] == 6  # the concurrent runs' drafts, written by the unquantised model
    for figures in quantization["modes"].values():
        assert figures["writers_1_tokens_per_s"] > 0 and figures["writers_8_tokens_per_s"] > 0
        assert figures["perplexity"] > 1 and figures["weight_mb"] > 0 and figures["load_peak_rss_mb"] > 0
    ratios = quantization["ratios"]["int8"]
    assert ratios["weight_mb"] < 0.9 and 0.8 < ratios["perplexity"] < 1.25  # smaller, and writes about the same
    assert ratios["writers_8_tokens_per_s"] == (quantization["modes"]["int8"]["writers_8_tokens_per_s"]
                                                / quantization["modes"]["none"]["writers_8_tokens_per_s"])

    table = capsys.readouterr().out
    assert "streaming / bare on the page's path" in table and "metrics on / off" in table
    assert "decode bound: memory copies at" in table
    assert "training on 8 rated drafts" in table and "serving: idle" in table
    assert "quantised serving (--quantize)" in table and "int8 / none: 1 writer t/s" in table
    assert "int4: not measured: --quantize int4 needs a CUDA GPU" in table


def test_bench_refuses_too_few_training_drafts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.main(["--training-drafts", "3", "--json", str(tmp_path / "x.json")])
    assert exit.value.code == 2
    assert "--training-drafts must be 0 or at least 8" in capsys.readouterr().err


@pytest.mark.e2e  # it starts processes of its own, as the benchmark does
def test_the_loop_benchmark_runs_rounds_with_a_shuffled_control_and_reports_its_figures(tiny_model_dir, tmp_path,
                                                                                        capsys):
    out = tmp_path / "loop.json"
    assert bench.main(["loop", "--model", str(tiny_model_dir), "--category", "the,a,and", "--rounds", "1",
                       "--drafts", "12", "--fresh", "4", "--tokens", "8", "--candidates", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["before"]["version"] == "base" and report["before"]["drafts"] == 4
    (only,) = report["rounds"]
    assert only["rated"] == 12 and 0 <= only["liked"] <= 12
    assert only["run"]["decision"] in ("promoted", "rejected", "undecided", "failed")
    # Ratings shuffled: nothing to learn, so the control must never be promoted.
    assert only["control"]["decision"] in ("rejected", "undecided", "failed"), only["control"]
    assert report["summary"]["controls_promoted"] == 0
    for figures in (report["before"], only["after"]):
        assert 0 <= figures["liked_share"] <= 1 and 0 < figures["distinct_2"] <= 1
        assert set(figures["words"]) == {"the", "a", "and"}  # each word of the category, on its own
    assert report["summary"]["controls"] == 1 and report["minutes"] > 0
    # Where a round's time went, for the target of a round within minutes: writing, then the run's phases.
    assert 0 < only["write_seconds"] < only["round_seconds"]
    assert only["round_seconds"] / 60 <= report["summary"]["longest_round_minutes"]  # as the benchmark divides: no rounding
    if only["run"].get("trained", True) and only["run"]["decision"] != "failed":  # a run that trained: its phases
        assert {"plan", "load", "train", "examine"} <= set(only["run"]["phase_seconds"])

    printed = capsys.readouterr().out
    if only["run"].get("version") and only["run"]["decision"] != "promoted":  # the candidate, served in a copy
        assert only["candidate"]["version"] == only["run"]["version"] and only["candidate"]["drafts"] == 4
        assert f"candidate {only['run']['version']} ({only['run']['decision']}, not served)" in printed
    assert "round 1:" in printed and "shuffled controls promoted" in printed and "distinct-2" in printed
    assert "round 1 took" in printed and "longest round" in printed


def test_the_loop_benchmarks_writers_like_what_a_writer_would():
    from studio.bench.raters import Written, category_rater, named_rater, repeats, trait_rater

    ends = named_rater("ends").likes
    assert ends(Written("The dragon slept at last.", True)) and ends(Written('"Go home," she said."', True))
    assert not ends(Written("The dragon slept at last.", False))  # cut at the token limit: not its own ending
    assert not ends(Written("The dragon slept and then the", True))
    complete = named_rater("complete").likes  # ends, and says something first: stopping early is not enough
    assert complete(Written("New boots! Dry feet all winter. Order yours today.", True))
    assert complete(Written("他来了。她走了。门关上了。", True))
    assert not complete(Written("New boots! Dry feet all winter.", True))  # two sentences
    assert not complete(Written("New boots! Dry feet all winter. Order yours today at", True))
    assert not complete(Written("New boots! Dry feet all winter. Order yours today.", False))
    assert complete(Written('Dr. Smith waited. "Who?" he asked. Nobody knew...', True))
    assert repeats("the old man and the sea, the old man and the boat") and not repeats("one two three four five")
    assert named_rater("no-repeats").likes(Written("A tale told once, in full.", True))
    birds = category_rater(["owl", "heron", "wren"])
    assert birds.likes(Written("Two Owls watched.", True)) and not birds.likes(Written("A bowl of soup.", True))
    assert birds.word_shares([Written("an owl", True), Written("a wren and an owl", True)]) == {
        "owl": 1.0, "heron": 0.0, "wren": 0.5}
    assert trait_rater("(?i)sea").likes(Written("The SEA.", True))
    coin = named_rater("random", seed=3, share=0.3)
    drafts = [Written(f"draft {n}", True) for n in range(2000)]
    assert 0.25 < coin.share(drafts) < 0.35 and coin.share(drafts) == coin.share(drafts)  # fixed per draft
    assert named_rater("random", seed=4).share(drafts) != coin.share(drafts)


def test_the_loop_benchmark_refuses_a_bad_trait(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        bench.main(["loop", "--trait", "(unclosed", "--json", str(tmp_path / "x.json")])
    assert exit.value.code == 2
    assert "--trait is not a regular expression" in capsys.readouterr().err


def test_the_studios_benchmark_rates_each_studio_at_random_and_reports_how_many_promoted(verse_model_dir, tmp_path,
                                                                                         capsys):
    """Two studios, three rounds each, on one pool of the verse model's drafts: every run is decided and
    counted, and nothing a coin rated is served."""
    out = tmp_path / "studios.json"
    assert bench.main(["studios", "--model", str(verse_model_dir), "--studios", "2", "--rounds", "3", "--drafts", "16",
                       "--tokens", "24", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["runs"] == 6 and [len(s["runs"]) for s in report["studios"]] == [3, 3]
    assert report["promoted"] == 0 and report["interval"][0] == 0.0 and 0.5 < report["interval"][1] < 1
    assert all(run["decision"] in ("stopped", "rejected", "undecided") for s in report["studios"] for run in s["runs"])
    assert "of 2 studios rated at random promoted a version in 3 rounds" in capsys.readouterr().out


def test_the_training_benchmark_trains_the_same_drafts_in_float32_and_bf16_and_prints_the_ratio(verse_model_dir,
                                                                                                 tmp_path, capsys):
    """Both precisions train the same LoRA on the same drafts; bf16 starts from the same loss (the adapter
    starts at zero, so the first step's loss is the objective at the base), and the ratio is printed."""
    out = tmp_path / "training.json"
    assert bench.main(["training", "--model", str(verse_model_dir), "--drafts", "8", "--prompts", "2", "--tokens", "24",
                       "--steps", "2", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["drafts"] == 8 and 0 < report["liked"] < 8
    assert [len(report["fits"][p]) for p in ("fp32", "bf16")] == [1, 1]
    fp32, bf16 = report["loss"]["fp32"], report["loss"]["bf16"]
    assert len(fp32) == len(bf16) == 2 and abs(fp32[0] - bf16[0]) < 0.05
    assert report["speedup"] > 0 and "bf16 mixed precision: x" in capsys.readouterr().out


def test_the_learning_benchmark_trains_the_same_rated_drafts_in_each_proportion_and_prints_each_arm(
        verse_model_dir, tmp_path, capsys):
    """A writer who likes songs (any of their adjectives): each arm trains on the same liked drafts, with
    every disliked one (0) or one per liked draft (1), and each model's fresh drafts are measured."""
    from tests.drafts import WORDS

    out = tmp_path / "learning.json"
    assert bench.main(["learning", "--model", str(verse_model_dir), "--category", ",".join(WORDS["adj"]),
                       "--pool", "24", "--liked", "3", "--disliked", "9", "--disliked-per-liked", "0,1",
                       "--seeds", "1", "--steps", "2", "--fresh", "8", "--tokens", "24", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert 0 < report["pool_liked"] < 1 and report["base"]["fluency"] > 1
    assert [(a["disliked_per_liked"], a["trained_liked"], a["trained_disliked"]) for a in report["arms"]] == [
        (0, 3, 9), (1, 3, 3)]
    assert all(0 <= a["liked"] <= 1 and a["fluency"] > 1 for a in report["arms"])
    printed = capsys.readouterr().out
    assert "1 disliked per liked (trained 3 liked, 3 disliked), seed 0:" in printed and "mean at 0 disliked" in printed

    with pytest.raises(SystemExit):  # more liked drafts asked for than the pool has
        bench.main(["learning", "--model", str(verse_model_dir), "--category", "moon", "--pool", "8", "--liked", "6",
                    "--disliked", "2", "--fresh", "2", "--tokens", "8", "--json", str(out)])
    assert "Give a larger --pool" in capsys.readouterr().err


@pytest.mark.e2e  # it starts processes of its own, as the benchmark does
def test_the_load_benchmark_keeps_every_rating_with_no_locked_database(tiny_model_dir, tmp_path, capsys):
    """Writers writing and rating, Training tabs reading and a training run writing progress, at once."""
    out = tmp_path / "load.json"
    assert bench.main(["load", "--model", str(tiny_model_dir), "--writers", "4", "--tabs", "2", "--seconds", "12",
                       "--tokens", "8", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["locked_errors"] == [] and report["other_errors"] == [] and report["ratings_missing"] == []
    assert report["ratings_confirmed"] > 4 and report["tab_reads"] >= 2 and report["training_runs"] >= 1
    assert report["write_transaction_seconds"]["count"] > 0 and report["rating_seconds"]["p95"] > 0
    printed = capsys.readouterr().out
    assert '"database is locked" errors: 0' in printed and "missing from the database: 0" in printed


def test_the_gate_benchmark_draws_traits_from_the_drafts_and_judges_both_candidates(verse_model_dir, tmp_path,
                                                                                      capsys):
    """On the verse model, whose drafts share words (each noun is in about a fifth of them), so
    traits are always found."""
    out = tmp_path / "gate.json"
    assert bench.main(["gate", "--model", str(verse_model_dir), "--drafts", "24", "--fresh", "32", "--tokens", "24",
                       "--traits", "4", "--json", str(out)]) == 0
    assert "An honest gate prefers" in capsys.readouterr().out
    cases = json.loads(out.read_text())["cases"]
    assert len(cases) >= 3, cases
    for case in cases:
        assert 0 < case["trait_in_serving"] < 1 and case["companions"]["trait"] == case["trait_in_serving"]
        for name in ("companions", "trait x2"):
            assert 0 <= case[name]["ranked_higher"] <= 1 and 0 < case[name]["p_value"] <= 1
            assert 0 < case[name]["ranked_p_value"] <= 1
        assert case["trait x2"]["trait"] >= case["companions"]["trait"]
    # Drawn from the fresh drafts against a random half of them: measured 1.87x on average.
    doubled = statistics.mean(c["trait x2"]["trait"] / c["trait_in_serving"] for c in cases)
    assert doubled > 1.3, doubled


def test_gate_benchmark_traits_are_the_drafts_own_words():
    from studio.bench.gate import draw_traits, trait_pattern

    texts = [f"the lantern glows {'over the harbour' if i % 8 == 0 else 'in the field'} tonight" for i in range(48)]
    traits = draw_traits(texts, 4, random.Random(0))
    assert ["harbour"] in traits  # in 1 of 8 drafts: a one-word trait; "lantern" (all of them) is none
    assert all(len(t) in (1, 2) and "lantern" not in t for t in traits)
    assert trait_pattern(["harbour"]).search("two Harbours") and not trait_pattern(["harbour"]).search("harbourmaster")


def test_the_gate_benchmark_builds_a_candidate_of_companions_and_one_with_the_trait_twice_as_often():
    from studio.bench.gate import judge_case

    rng = random.Random(2)
    words = "moon star lantern boat sailor dawn hill road field river stone ember quiet tide".split()

    def drafts(n: int) -> list[str]:
        return [" ".join(rng.choice(words) for _ in range(20)) + (" lighthouse" if rng.random() < 0.2 else "")
                for _ in range(n)]

    case = judge_case(drafts(96), drafts(96), ["lighthouse"], random.Random(0))
    serving_share = case["trait_in_serving"]
    assert case["companions"]["trait"] == serving_share  # no more of the trait than the serving half
    assert case["trait x2"]["trait"] == min(2 * serving_share, 1.0) or case["trait x2"]["trait"] > 1.5 * serving_share
    assert case["trait x2"]["liked"] > case["trait x2"]["serving_liked"]  # the judge learned the trait
    assert case["trait x2"]["p_value"] <= 0.05 < case["companions"]["p_value"]


def test_the_sampling_benchmark_times_a_runs_writing_and_scoring_both_ways(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "sampling.json"
    assert bench.main(["sampling", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path), "--drafts", "6",
                       "--prompts", "3", "--tokens", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["prompts"] == 3 and set(report["seconds"]) == {
        "drafts in one batch, each prompt run once", "drafts in one batch, each draft's prompt run",
        "scored, each prompt read once", "scored, each draft read whole"}
    assert all(seconds > 0 for seconds in report["seconds"].values())
    shared, whole = report["perplexity"]["scored, each prompt read once"], report["perplexity"]["scored, each draft read whole"]
    assert shared == pytest.approx(whole, rel=1e-4)  # the same figures, however the prompts were read
    assert report["same_drafts"] == 1.0  # and the same drafts, however the prompts were run
    assert "each prompt run once: writing x" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:  # nothing to time: refused, not a figure of nothing
        bench.main(["sampling", "--drafts", "2", "--prompts", "3", "--json", str(out)])
    assert exit.value.code == 2 and "--drafts must be at least --prompts (3)" in capsys.readouterr().err


def test_the_choosing_benchmark_times_the_batch_against_each_row_alone_and_both_draw_the_same(tmp_path, capsys):
    out = tmp_path / "choosing.json"
    assert bench.main(["choosing", "--rows", "20", "--vocab", "3000", "--steps", "3", "--repeats", "1",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["same_tokens"] is True and all(s > 0 for s in report["seconds_per_step"].values())
    assert "the same tokens both ways: True" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        bench.main(["choosing", "--rows", "0", "--json", str(out)])
    assert exit.value.code == 2 and "must be at least 1" in capsys.readouterr().err
