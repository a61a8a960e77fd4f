"""Phase C, compare: item scores by hand, then a full compare on a collected offline benchmark.

The full compare runs once per module on the three offline candidates, judged by two synthetic
judges whose scores are known, so the leaderboard, the tests and the agreement are known too.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from benchmark.collect import collect
from benchmark.compare import CompareParams, compare
from benchmark.grid import CollectParams
from benchmark.items import judged_items
from benchmark.report import render_html
from benchmark.report_models import CompareReport
from benchmark.rubric import load_rubric
from benchmark.stats import weighted_kappa
from benchmark.store import BenchStore, Cell, JudgeBatch, JudgeFailure, Judgment
from service.settings import Settings
from tipml.cli import app
from tipml.cli_support import console

RUBRIC = load_rubric("tip-v1")
MODELS = ("rules", "generic-baseline", "chatty-baseline")


def make_cell(cell_id: str, **fields: object) -> Cell:
    values = {
        "cell_id": cell_id,
        "benchmark": "unit",
        "model": "m",
        "litellm_model": "openai/m",
        "prompt_version": "v1",
        "prompt_hash": "ph",
        "scenario_set": "set",
        "scenario_set_hash": "sh",
        "scenario_id": f"s-{cell_id}",
        "sample": 0,
        "params": {},
        "text": "Pick one task.",
        "format_ok": True,
        "overlong": False,
        "latency_ms": 10.0,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "cost_usd": 0.0,
        "from_cache": False,
        "run_id": f"run-{cell_id}",
    }
    return Cell.model_validate(values | fields)


def score(cell: str, judge: str, rel: int, act: int, tone: int, repeat: int = 0) -> Judgment:
    return Judgment(
        cell_id=cell,
        judge=judge,
        rubric_version=RUBRIC.version,
        repeat=repeat,
        relevance=rel,
        actionability=act,
        tone=tone,
    )


def batch(batch_id: str, judge: str, kind: str = "llm") -> JudgeBatch:
    return JudgeBatch(
        batch_id=batch_id,
        judge=judge,
        judge_kind=kind,
        rubric_version=RUBRIC.version,
        rubric_hash=RUBRIC.text_hash,
        source="test",
    )


# --- judged items (benchmark/items.py) ----------------------------------------------------------


def test_composite_is_the_rubrics_weighted_sum_with_flags_from_the_cell() -> None:
    cells = [make_cell("ok"), make_cell("bad", format_ok=False, overlong=True)]
    judgments = [score("ok", "j", 4, 3, 5), score("bad", "j", 4, 3, 5)]

    items = judged_items(cells, judgments, RUBRIC, ()).set_index("cell_id")

    # tip-v1: rel + act + tone + 2 * format_ok - overlong
    assert items.loc["ok", "composite"] == 14  # 4 + 3 + 5 + 2 * 1 - 0
    assert items.loc["bad", "composite"] == 11  # 4 + 3 + 5 + 2 * 0 - 1
    assert items.loc["bad", ["format_ok", "overlong"]].tolist() == [0, 1]
    assert items.loc["ok", "cell"] == "m|v1"


def test_criteria_average_repeats_within_a_judge_then_judges() -> None:
    cells = [make_cell("c")]
    judgments = [
        score("c", "a", 4, 2, 3, repeat=0),
        score("c", "a", 5, 2, 3, repeat=1),
        score("c", "b", 2, 4, 3),
    ]

    both = judged_items(cells, judgments, RUBRIC, ()).iloc[0]
    only_a = judged_items(cells, judgments, RUBRIC, ("a",)).iloc[0]

    # Judge a's repeats count once: (4.5 + 2) / 2, not (4 + 5 + 2) / 3.
    assert both["relevance"] == pytest.approx(3.25)
    assert both["actionability"] == pytest.approx(3.0)
    assert both["n_judgments"] == 3
    assert only_a["relevance"] == pytest.approx(4.5)
    assert only_a["n_judgments"] == 2


def test_unjudged_cells_and_other_rubrics_are_left_out() -> None:
    cells = [make_cell("judged"), make_cell("never"), make_cell("other-rubric")]
    other = score("other-rubric", "a", 5, 5, 5).model_copy(update={"rubric_version": "tip-v0"})

    items = judged_items(cells, [score("judged", "a", 3, 3, 3), other], RUBRIC, ())

    assert items["cell_id"].tolist() == ["judged"]


# --- a full compare on collected cells ------------------------------------------------------------


@dataclass(frozen=True)
class Judged:
    settings: Settings
    report: CompareReport
    unjudged: set[str]
    a_tone: list[int]  # judge a's per-cell mean tone, rounded, for the cells b judged too
    b_tone: list[int]


def _true_scores(cell: Cell, even: bool) -> tuple[int, int, int]:
    """What judge a gives: rules best, the generic baseline next, the chatty one last."""
    return {
        "rules": (5 if even else 4, 4, 4),
        "generic-baseline": (3, 3, 3),
        "chatty-baseline": (2, 2, 2),
    }[cell.model]


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judged]:
    settings = Settings(home=tmp_path_factory.mktemp("compare") / "home")
    collected = collect(CollectParams(models=MODELS), settings)
    assert collected.collected == 90 and not collected.failed

    store = BenchStore.of(settings)
    cells = store.cells("tip-benchmark")
    scenarios = sorted({c.scenario_id for c in cells})
    unjudged = {
        c.cell_id
        for c in cells
        if (c.model, c.prompt_version) == ("generic-baseline", "v1")
        and c.scenario_id in scenarios[:2]
    }
    a, b, a_tone, b_tone = [], [], [], []
    for cell in cells:
        if cell.cell_id in unjudged:
            continue
        rel, act, tone = _true_scores(cell, scenarios.index(cell.scenario_id) % 2 == 0)
        a.append(score(cell.cell_id, "judge-a", rel, act, tone))
        if cell.model == "rules":  # a second look: tone 5 instead of 4, mean 4.5
            a.append(score(cell.cell_id, "judge-a", rel, act, 5, repeat=1))
        b_cell_tone = 2 if cell.model == "generic-baseline" else tone
        b.append(score(cell.cell_id, "judge-b", rel, act, b_cell_tone))
        a_tone.append(5 if cell.model == "rules" else tone)  # 4.5 rounds half up
        b_tone.append(b_cell_tone)
    # No score for the unjudged cells, and a third look at a rules cell that did not parse.
    failures = [
        JudgeFailure(
            cell_id=cell_id,
            judge="judge-a",
            rubric_version=RUBRIC.version,
            repeat=0,
            reason="unparseable: not JSON",
        )
        for cell_id in sorted(unjudged)
    ]
    rules_cell = next(c.cell_id for c in cells if c.model == "rules")
    failures.append(failures[0].model_copy(update={"cell_id": rules_cell, "repeat": 2}))
    store.apply_batch(batch("a1", "judge-a"), a, failures)
    store.apply_batch(batch("b1", "judge-b", kind="human"), b)
    store.close()

    report = compare(CompareParams(n_boot=500), settings)
    yield Judged(settings, report, unjudged, a_tone, b_tone)


def test_leaderboard_ranks_by_mean_composite(judged: Judged) -> None:
    board = judged.report.leaderboard

    assert [row.rank for row in board] == list(range(1, 10))
    assert [row.model for row in board] == [m for m in MODELS for _ in range(3)]
    means = [row.mean for row in board]
    assert means == sorted(means, reverse=True)
    chatty = board[-1]
    # rel 2 + act 2 + tone 2 + format_ok 0 (the chatty tips break the output contract)
    assert chatty.mean == pytest.approx(6.0)
    assert chatty.format_ok_rate == 0.0
    assert all(row.low <= row.mean <= row.high for row in board)
    assert judged.report.rank_stability.base_ranking == [row.cell for row in board]


def test_unjudged_cells_and_failed_answers_are_counted_not_scored(judged: Judged) -> None:
    report = judged.report
    generic_v1 = next(row for row in report.leaderboard if row.cell == "generic-baseline|v1")
    judge_a = next(j for j in report.judges.judges if j.judge == "judge-a")

    assert (report.n_cells, report.n_judged, report.n_unjudged) == (90, 88, 2)
    assert (generic_v1.n_items, generic_v1.n_unjudged) == (8, 2)
    # rel 3 + act 3 + tone (3 + 2) / 2 + format_ok 2; a zero for a failure would pull it down.
    assert generic_v1.mean == pytest.approx(10.5)
    assert judge_a.n_failures == 3
    assert judge_a.n_judgments == 88 + 30
    assert judge_a.kinds == ["llm"]


def test_every_cell_is_tested_against_the_best_in_its_own_holm_family(judged: Judged) -> None:
    tests = judged.report.pairs
    best = [t for t in tests if t.family == "vs best rules|v1"]
    rules_vs_chatty = next(t for t in best if t.a == "chatty-baseline|v1")
    generic_v1 = next(t for t in best if t.a == "generic-baseline|v1")

    assert tests[: len(best)] == best and len(best) == 8
    assert {t.b for t in best} == {"rules|v1"}
    # Every one of the 10 scenarios favours rules: the two most extreme of 2**10 sign patterns.
    # Eight tests, not 36, so the winner is named: five tests at 2/1024, Holm's first x 8.
    assert rules_vs_chatty.mean_diff < 0
    assert rules_vs_chatty.p_value == pytest.approx(2 / 1024)
    assert rules_vs_chatty.p_holm == pytest.approx(8 * 2 / 1024)
    assert rules_vs_chatty.significant
    # The per-scenario difference alternates between two values 1 apart (rules' relevance
    # is 5 and 4 on alternate scenarios): SD 0.5 * sqrt(10/9), times statsmodels' standardized
    # MDE for 10 scenarios at 0.05/8 (tests/benchmark/test_bench_power.py).
    assert rules_vs_chatty.mde == pytest.approx(1.434445729749674 * 0.5 * (10 / 9) ** 0.5, rel=1e-5)
    # Two unjudged scenarios leave generic|v1 eight: 2/256 * 8 > 0.05 at Holm's first step,
    # yet significant at its own, third, step (2/256 * 3).
    assert (generic_v1.n_scenarios, generic_v1.mde) == (8, None)
    assert generic_v1.p_holm == pytest.approx(3 * 2 / 256) and generic_v1.significant


def test_prompts_within_models_and_models_within_prompts_are_families_too(judged: Judged) -> None:
    families: dict[str, list[tuple[str, str]]] = {}
    for test in judged.report.pairs:
        families.setdefault(test.family, []).append((test.a, test.b))
    on_v1 = {(t.a, t.b): t for t in judged.report.pairs if t.family == "models on v1"}

    assert list(families) == [
        "vs best rules|v1",
        *(f"prompts of {m}" for m in sorted(MODELS)),
        *(f"models on {p}" for p in ("v1", "v2-mentor", "v3-few-shot")),
    ]
    assert families["prompts of rules"] == [
        ("rules|v1", "rules|v2-mentor"),
        ("rules|v1", "rules|v3-few-shot"),
        ("rules|v2-mentor", "rules|v3-few-shot"),
    ]
    # The prompt makes no difference to these offline writers.
    assert all(
        t.p_value == 1.0 and not t.significant
        for t in judged.report.pairs
        if t.family.startswith("prompts of")
    )
    assert on_v1["chatty-baseline|v1", "rules|v1"].p_holm == pytest.approx(3 * 2 / 1024)
    assert on_v1["chatty-baseline|v1", "generic-baseline|v1"].p_holm == pytest.approx(2 * 2 / 256)


def test_cli_compares_all_pairs_or_against_a_control(
    judged: Judged, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    home = ["--home", str(judged.settings.home), "bench", "compare"]
    reports = judged.settings.bench_dir / "reports"
    before = set(reports.glob("*/leaderboard.json"))
    monkeypatch.setattr(console, "_width", 200)  # no table cell folded over two lines

    result = runner.invoke(app, [*home, "--pairs", "all"])
    assert result.exit_code == 0, result.output
    (written,) = set(reports.glob("*/leaderboard.json")) - before
    report = CompareReport.model_validate_json(written.read_text())
    every = [t for t in report.pairs if t.family == "all pairs"]
    rules_vs_chatty = next(t for t in every if (t.a, t.b) == ("chatty-baseline|v1", "rules|v1"))
    assert len(every) == 36
    assert rules_vs_chatty.p_holm == pytest.approx(36 * 2 / 1024)
    assert not rules_vs_chatty.significant  # 10 scenarios cannot carry 36 comparisons
    assert {t.mde for t in every} == {None}  # ... whatever the difference: 2/1024 * 36 > 0.05
    assert "p_holm <= 0.05" in result.output
    row = r"│ all pairs +│ chatty-baseline\|v1 +│ rules\|v1 +│ -8.75 +│ 0.0703 +│ no +│ unreachable"
    assert re.search(row, result.output)

    result = runner.invoke(app, [*home, "--control", "rules|v9"])
    assert result.exit_code == 1 and "control 'rules|v9' is not a cell" in result.output
    result = runner.invoke(app, [*home, "--pairs", "all", "--control", "rules|v1"])
    assert result.exit_code == 2 and "--control" in result.output
    result = runner.invoke(app, [*home, "--pairs", "some"])
    assert result.exit_code == 2 and "--pairs" in result.output


def test_judge_variance_and_agreement(judged: Judged) -> None:
    section = judged.report.judges
    judge_a, judge_b = section.judges
    (pair,) = section.pairs

    assert judge_a.variance is not None and judge_b.variance is None
    assert judge_a.variance.criteria["tone"].share_unstable == 1.0
    assert judge_a.variance.criteria["tone"].n_items == 30
    assert judge_a.variance.criteria["relevance"].share_unstable == 0.0
    assert (pair.judge_a, pair.judge_b, pair.n_cells) == ("judge-a", "judge-b", 88)
    assert pair.kappa["relevance"] == 1.0
    assert pair.kappa["tone"] == pytest.approx(weighted_kappa(judged.a_tone, judged.b_tone))
    assert pair.kappa["tone"] < 1.0
    assert section.krippendorff_alpha is not None
    assert set(section.krippendorff_alpha) == set(RUBRIC.criteria)
    assert section.krippendorff_alpha["actionability"] == 1.0
    assert section.krippendorff_alpha["tone"] < 1.0


def test_report_files_and_identities(judged: Judged) -> None:
    report = judged.report

    assert report.report_dir.parent == judged.settings.bench_dir / "reports"
    assert report.report_dir.name.startswith(f"tip-benchmark-{report.created:%Y%m%dT%H%M%SZ}-")
    assert CompareReport.model_validate_json(report.json_path.read_text()) == report
    assert report.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.html_path.read_text()
    assert "<script" not in page
    for text in (
        "rules|v1",
        RUBRIC.text_hash,
        report.scenario_sets[0].hash,
        "p_holm",
        "p_holm &lt;= 0.05",
        "<th>MDE (80% power)</th>",
        "<td>vs best rules|v1</td>",
        "<td>unreachable</td>",  # generic-baseline|v1 against the best: 8 scenarios
    ):
        assert text in page
    (set_ref,) = report.scenario_sets
    assert (set_ref.id, set_ref.n_cells) == ("tip-scenarios-v1", 90)
    assert (report.rubric_version, report.rubric_hash) == ("tip-v1", RUBRIC.text_hash)


def test_mlflow_run_has_tags_metrics_and_artifacts(judged: Judged) -> None:
    report = judged.report
    client = MlflowClient(tracking_uri=judged.settings.tracking_uri)
    run = client.get_run(report.run_id)

    assert client.get_experiment(run.info.experiment_id).name == "tip-benchmark"
    assert run.info.run_name == f"compare-{report.created:%Y%m%dT%H%M%SZ}"
    assert run.info.status == "FINISHED"
    assert run.data.tags["phase"] == "compare"
    assert run.data.tags["rubric_version"] == "tip-v1"
    assert run.data.tags["scenario_set"] == "tip-scenarios-v1"
    for row in report.leaderboard:
        name = f"composite_mean/{row.model}/{row.prompt_version}"
        assert run.data.metrics[name] == pytest.approx(row.mean)
    artifacts = {a.path for a in client.list_artifacts(report.run_id)}
    assert artifacts == {"report.html", "leaderboard.png", "leaderboard.json", "rubric-tip-v1.yaml"}


def test_undefined_agreement_shows_as_undefined(judged: Judged) -> None:
    judges = judged.report.judges
    (pair,) = judges.pairs
    assert judges.krippendorff_alpha is not None
    undefined = judges.model_copy(
        update={
            "pairs": [pair.model_copy(update={"kappa": pair.kappa | {"tone": None}})],
            "krippendorff_alpha": judges.krippendorff_alpha | {"tone": None},
        }
    )

    page = render_html(judged.report.model_copy(update={"judges": undefined}))

    assert page.count("<td>undefined</td>") == 1
    assert "tone undefined" in page


# --- model output in the page, and refusals -------------------------------------------------------


def test_html_escapes_model_output_and_names(judged: Judged) -> None:
    store = BenchStore.of(judged.settings)
    evil = "<script>alert('tip')</script> & <b>bold</b>"
    for version in ("p1", "p2"):
        store.add_cell(
            make_cell(
                f"markup-{version}",
                benchmark="markup",
                model="m<i>",
                prompt_version=version,
                scenario_id="s",
                text=evil,
            )
        )
    store.apply_batch(
        batch("markup", "judge<x>"),
        [score("markup-p1", "judge<x>", 5, 5, 5), score("markup-p2", "judge<x>", 1, 1, 1)],
    )
    store.close()

    report = compare(CompareParams(benchmark="markup", n_boot=100), judged.settings)
    page = report.html_path.read_text()

    assert "&lt;script&gt;alert(&#x27;tip&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    for raw in ("<script", "<b>", "<i>", "<x>"):
        assert raw not in page
    run = MlflowClient(tracking_uri=judged.settings.tracking_uri).get_run(report.run_id)
    assert "composite_mean/m_i_/p1" in run.data.metrics


def test_refuses_without_cells_or_judgments(judged: Judged) -> None:
    with pytest.raises(ValueError, match="has no cells"):
        compare(CompareParams(benchmark="nothing-here"), judged.settings)

    store = BenchStore.of(judged.settings)
    store.add_cell(make_cell("lonely", benchmark="unjudged"))
    store.close()
    with pytest.raises(ValueError, match="none judged") as refused:
        compare(CompareParams(benchmark="unjudged"), judged.settings)
    assert "tipml bench judge export" in str(refused.value)
    assert "tipml bench judge auto --judge MODEL" in str(refused.value)

    with pytest.raises(ValueError, match="did not judge this benchmark"):
        compare(CompareParams(judges=("judge-z",)), judged.settings)
