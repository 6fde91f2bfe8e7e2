"""A study's summary, computed from its sub-runs' own files alone: study.json's numbers and study.md.

Where each number comes from:
  - a training's final score: the mean IS and FID of its last `--tail-evals` evaluations (its result.json's
    `tail_mean`, from its log's `eval` events: one evaluation of a small GAN swings with its last steps);
  - a search's score: its top-1 architecture's final score, averaged over the train seeds;
  - a search's proxy curve: the mean reward of each search iteration (log.jsonl's `iteration` events);
  - a random architecture's proxy: its reward on each finished search of the proxy arm (proxy/*), averaged.
A diverged or blocked sub-run has no score (None), and is counted, never imputed (`sub_runs`: the plan's
sub-runs by status, see `results`). A result.json the summary cannot read is no score either.
"""

from __future__ import annotations

import math
import statistics as pystats
from dataclasses import asdict
from pathlib import Path

from ..runs.checkpoint import parse_json
from ..runs.folder import LOG, JsonlLog
from .plan import StudySettings, SubRun, random_archs
from .results import read_result as read_checked_result
from .results import statuses
from .statistics import (
    MIN_INTERVAL_N,
    compare,
    compare_to_value,
    mean_interval,
    n_for_power,
    noise_ceiling,
    signed_superiority,
    smallest_p,
    spearman_brown,
    spearman_interval,
    superiority,
)

FORMAT = "autogan_fast.study/1"
PAPER_SPEARMAN = 0.779  # AutoGAN's reported correlation of the shared GAN's IS with the retrained IS
CONTROLLER_ARMS = ("mlas", "slas", "mlas-no-reset")  # the arms whose architectures a controller chose


def read_result(study_dir: Path, run: SubRun, plan: list[SubRun]) -> dict | None:
    """A finished sub-run's result.json, or None (not finished, or damaged: see `results`)."""
    return read_checked_result(study_dir, run, {r.name: r for r in plan})[0]


def training_score(study_dir: Path, run: SubRun, plan: list[SubRun]) -> dict | None:
    """A finished training's final score (its result.json's `tail_mean`: the mean IS and FID of its last
    `--tail-evals` evaluations); None if the training did not finish (diverged, blocked, or not run)."""
    result = read_result(study_dir, run, plan)
    return None if result is None else result["tail_mean"]


def proxy_curve(run_dir: Path) -> list[float]:
    """The mean reward of each search iteration, in order."""
    events = JsonlLog(run_dir / LOG).read()
    return [e["mean_inception_score"] for e in sorted((e for e in events if e.get("event") == "iteration"),
                                                       key=lambda e: e["search_iter"])]


def interval(values: list[float]) -> dict:
    """Mean and 95% bootstrap percentile interval as study.json writes it (`statistics.mean_interval`: NaN
    bounds below MIN_INTERVAL_N values, NaN everything when there are none)."""
    if not values:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    estimate = mean_interval(values)
    return {"mean": estimate.estimate, "low": estimate.low, "high": estimate.high, "n": estimate.n}


def mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return pystats.fmean(present) if present else None


def trained_scores(study_dir: Path, runs: list[SubRun], plan: list[SubRun]) -> dict:
    """The trainings `runs` (one architecture, its train seeds): each seed's score and their mean."""
    seeds = [{"train_seed": run.train_seed, "run": run.name, **(training_score(study_dir, run, plan) or {})}
             for run in runs]
    return {"trainings": seeds, "final_is": mean_or_none([s.get("inception_score") for s in seeds]),
            "final_fid": mean_or_none([s.get("fid") for s in seeds])}


def summarize_arm(study_dir: Path, settings: StudySettings, plan: list[SubRun], arm: str) -> dict:
    searches = []
    for run in (r for r in plan if r.command == "search" and r.arm == arm):
        result = read_result(study_dir, run, plan)
        entry = {"seed": run.seed, "run": run.name, "finished": result is not None,
                 "ranked": None if result is None else len(result["archs"]),  # distinct architectures kept
                 "finding": None if result is None else result.get("finding", True),
                 "collapsed_stages": None if result is None else result.get("collapsed_stages", []),
                 "proxy_curve": proxy_curve(study_dir / run.name) if (study_dir / run.name / LOG).exists() else [],
                 "top": [], "top1_arch": None, "final_is": None, "final_fid": None}
        for rank in range(1, settings.top + 1):
            ranked = result["archs"][rank - 1] if result is not None and rank <= len(result["archs"]) else None
            trainings = [r for r in plan if r.command == "train" and r.needs == (run.name,) and r.rank == rank]
            entry["top"].append({"rank": rank, "arch": ranked and ranked["arch"],
                                 "proxy_is": ranked and ranked["inception_score"],
                                 **trained_scores(study_dir, trainings, plan)})
        if entry["top"]:
            top1 = entry["top"][0]
            entry.update(top1_arch=top1["arch"], final_is=top1["final_is"], final_fid=top1["final_fid"])
        searches.append(entry)
    scored = [s for s in searches if s["final_is"] is not None]
    best = max(scored, key=lambda s: s["final_is"], default=None)
    return {"searches": searches, "final_is": interval([s["final_is"] for s in scored]),
            "final_fid": interval([s["final_fid"] for s in scored]),
            "collapsed_searches": sum(bool(s["collapsed_stages"]) for s in searches),
            "best_arch": best and best["top1_arch"], "best_final_is": best and best["final_is"]}


def summarize_random(study_dir: Path, settings: StudySettings, plan: list[SubRun]) -> dict:
    archs = []
    for index, arch in enumerate(random_archs(settings.random_archs, settings.seed)):
        trainings = [r for r in plan if r.command == "train" and r.arch_index == index]
        archs.append({"index": index, "arch": arch, **trained_scores(study_dir, trainings, plan)})
    final_is = [a["final_is"] for a in archs if a["final_is"] is not None]
    final_fid = [a["final_fid"] for a in archs if a["final_fid"] is not None]
    return {"archs": archs, "final_is": interval(final_is), "final_fid": interval(final_fid),
            "median_is": pystats.median(final_is) if final_is else None,
            "median_fid": pystats.median(final_fid) if final_fid else None,
            "test_retest": retest_correlation(archs, settings.train_seeds) if settings.train_seeds >= 2 else None}


def retest_correlation(archs: list[dict], train_seeds: int) -> dict:
    """How much of the final score is training noise: per metric, the Spearman of each random architecture's
    first train seed's score against its second's (the architectures with both), the reliability of the mean
    of `train_seeds` scores (the final score) by Spearman-Brown, and the noise ceiling: the highest
    correlation any proxy could reach with that mean (statistics.noise_ceiling). Spearman stands in for
    the Pearson correlation the two formulas are derived for (ranks are what the study correlates)."""
    found = {}
    for metric, key in (("IS", "inception_score"), ("FID", "fid")):
        pairs = []
        for arch in archs:
            scored = sorted((t for t in arch["trainings"] if t.get(key) is not None), key=lambda t: t["train_seed"])
            if len(scored) >= 2:
                pairs.append((scored[0][key], scored[1][key]))
        rho = spearman([first for first, _ in pairs], [second for _, second in pairs])
        found[metric] = {**rho, "train_seeds": train_seeds, "mean_reliability": spearman_brown(rho["rho"], train_seeds),
                         "ceiling": noise_ceiling(rho["rho"], train_seeds)}
    return found


def spearman(proxy: list[float], final: list[float]) -> dict:
    """Spearman's rho with its bootstrap 95% interval, n and p (NaN below 3 pairs)."""
    if len(proxy) < 3:
        return {"rho": math.nan, "low": math.nan, "high": math.nan, "n": len(proxy), "p": math.nan}
    rho, p = spearman_interval(proxy, final)
    return {"rho": rho.estimate, "low": rho.low, "high": rho.high, "n": rho.n, "p": p}


def correlations(archs: list[dict]) -> dict:
    """Spearman of proxy IS against final IS, and against -FID (so that agreement is positive for both)."""
    paired = [a for a in archs if a["proxy_is"] is not None and a["final_is"] is not None]
    return {"spearman_is": spearman([a["proxy_is"] for a in paired], [a["final_is"] for a in paired]),
            "spearman_fid": spearman([a["proxy_is"] for a in paired], [-a["final_fid"] for a in paired])}


def proxy_on(study_dir: Path, runs: list[SubRun], baseline: dict, plan: list[SubRun]) -> dict:
    """Proxy vs final for the rescoring sub-runs `runs` (one arm's searches): each random architecture's
    proxy IS, averaged over the searches, against its final scores; and each search's Spearman alone."""
    proxies = [(run.name, result) for run in runs if (result := read_result(study_dir, run, plan)) is not None]
    archs = []
    for index, entry in enumerate(baseline["archs"]):
        scores = [result["archs"][index]["proxy_is"] for _, result in proxies]
        archs.append({"arch": entry["arch"], "proxy_is": mean_or_none(scores), "proxy_is_per_search": scores,
                      "final_is": entry["final_is"], "final_fid": entry["final_fid"]})
    per_search = []
    for position, (name, _) in enumerate(proxies):
        single = [{**a, "proxy_is": a["proxy_is_per_search"][position]} for a in archs]
        per_search.append({"run": name, **correlations(single)})
    return {"searches": [name for name, _ in proxies], "archs": archs, **correlations(archs),
            "per_search": per_search}


def summarize_proxy(study_dir: Path, settings: StudySettings, plan: list[SubRun], baseline: dict) -> dict:
    """Proxy vs final on each proxy arm's shared GANs (`by_arm`); the headline arm's (the first) also at the
    top level."""
    arms = settings.resolved_proxy_arms()
    by_arm = {arm: proxy_on(study_dir, [r for r in plan if r.command == "proxy" and r.arm == arm], baseline, plan)
              for arm in arms}
    return {"headline": arms[0], **by_arm[arms[0]], "by_arm": by_arm, "anchor": PAPER_SPEARMAN}


def comparison_row(label_a: str, a: list[float], label_b: str, b: list[float] | float, metric: str) -> dict:
    """One row of a question's table: "a is better than b" on `metric` (IS: higher, FID: lower), `b` a list
    (Mann-Whitney) or one value (Wilcoxon signed-rank against it)."""
    sign = 1.0 if metric == "IS" else -1.0  # the tests ask "larger"; a lower FID is better
    row = {"a": label_a, "b": label_b, "metric": metric, "a_interval": interval(a),
           "b_interval": interval(b) if isinstance(b, list) else None,
           "b_value": None if isinstance(b, list) else b}
    if not a or (isinstance(b, list) and not b) or b is None:
        return {**row, "test": None, "p": None, "smallest_p": None, "verdict": "not shown", "note": "no values",
                "effect": None, "n_for_power": None}
    signed_a = [sign * v for v in a]
    if isinstance(b, list):
        result = compare(signed_a, [sign * v for v in b])
        effect = superiority(signed_a, [sign * v for v in b])
    else:
        result = compare_to_value(signed_a, sign * b)
        effect = signed_superiority(signed_a, sign * b)
    # the n of a that would detect the observed effect at POWER (statistics.n_for_power: Noether's approximation)
    needed = n_for_power(result.test, effect, result.n_a / (result.n_a + result.n_b))
    return {**row, "test": result.test, "p": result.p_greater, "p_reverse": result.p_less,
            "smallest_p": smallest_p(result.test, result.n_a, result.n_b), "verdict": result.verdict,
            "effect": effect, "n_for_power": needed}


def arm_values(arms: dict, names: list[str], key: str) -> list[float]:
    return [s[key] for name in names for s in arms[name]["searches"] if s[key] is not None]


def questions(arms: dict, baseline: dict, proxy: dict) -> list[dict]:
    """The study's research questions, each a table of comparisons with their tests and verdicts."""
    present = list(arms)
    controller = [a for a in CONTROLLER_ARMS if a in arms]
    random_is = [a["final_is"] for a in baseline["archs"] if a["final_is"] is not None]
    random_fid = [a["final_fid"] for a in baseline["archs"] if a["final_fid"] is not None]
    pooled = "searched (" + ", ".join(controller) + ")"
    groups = [(arm, [arm]) for arm in present] + ([(pooled, controller)] if controller else [])
    chance = [comparison_row(label, arm_values(arms, names, key), "median random arch", baseline[median], metric)
              for label, names in groups
              for key, median, metric in (("final_is", "median_is", "IS"), ("final_fid", "median_fid", "FID"))]
    if controller:  # the whole random distribution, not just its median
        chance += [comparison_row(pooled, arm_values(arms, controller, "final_is"), "random archs", random_is, "IS"),
                   comparison_row(pooled, arm_values(arms, controller, "final_fid"), "random archs", random_fid, "FID")]
    found = [{"id": "search-vs-chance", "title": "Does the search find better generators than chance?",
              "rows": chance}]
    for key, title, a, b in (("mlas-vs-slas", "Does multi-level search beat single-level search?", "mlas", "slas"),
                             ("controller-vs-uniform", "Does the controller beat uniform sampling in the same "
                              "search?", "mlas", "random"),
                             ("dynamic-reset", "Does dynamic reset help?", "mlas", "mlas-no-reset")):
        if a in arms and b in arms:
            found.append({"id": key, "title": title, "rows": [
                comparison_row(a, arm_values(arms, [a], k), b, arm_values(arms, [b], k), metric)
                for k, metric in (("final_is", "IS"), ("final_fid", "FID"))]})
    spearman_rows = []
    for arm, entry in proxy["by_arm"].items():
        for metric, key in (("IS", "spearman_is"), ("FID", "spearman_fid")):
            rho = entry[key]
            significant = not math.isnan(rho["p"]) and rho["p"] < 0.05
            verdict = ("holds" if rho["rho"] > 0 else "reversed") if significant else "not shown"
            retest = (baseline.get("test_retest") or {}).get(metric)
            ceiling = math.nan if retest is None else retest["ceiling"]
            spearman_rows.append({"arm": arm, "headline": arm == proxy["headline"], "metric": metric, **rho,
                                  "verdict": verdict, "anchor": proxy["anchor"], "ceiling": ceiling,
                                  "share_of_ceiling": rho["rho"] / ceiling if ceiling > 0 else math.nan})
    found.append({"id": "proxy-vs-final", "title": "Does the proxy (the shared GAN's IS) predict the final score?",
                  "rows": spearman_rows})
    return found


def summarize(study_dir: Path, settings: StudySettings, plan: list[SubRun]) -> dict:
    """Every number of the study, from the sub-runs' files (study.json)."""
    arms = {arm: summarize_arm(study_dir, settings, plan, arm) for arm in settings.arms}
    baseline = summarize_random(study_dir, settings, plan)
    proxy = summarize_proxy(study_dir, settings, plan, baseline)
    return {"format": FORMAT, "settings": settings_dict(settings, study_dir, plan),
            "sub_runs": sub_runs(study_dir, plan), "arms": arms, "random_baseline": baseline, "proxy_vs_final": proxy,
            "questions": questions(arms, baseline, proxy)}


SUB_RUN_STATUSES = ("done", "diverged", "blocked", "unranked", "damaged", "pending")


def sub_runs(study_dir: Path, plan: list[SubRun]) -> dict:
    """The plan's sub-runs by status (`results`): how many, and the names of those without numbers."""
    found = statuses(study_dir, plan)
    return {"total": len(plan), "done": len(found.get("done", [])),
            **{name: found.get(name, []) for name in SUB_RUN_STATUSES[1:]}}


def settings_dict(settings: StudySettings, study_dir: Path, plan: list[SubRun]) -> dict:
    """The settings with what the plots and the report need from the sub-runs: the grow iterations."""
    grows = []
    for run in plan:
        if run.command == "search" and run.arm != "slas":
            config = read_json(study_dir / run.name / "config.json")
            if config is not None:
                grows = [config["grow_step1"], config["grow_step2"]]
                break
    return {**asdict(settings), "arms": list(settings.arms), "grow_steps": grows}


def read_json(path: Path) -> dict | None:
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# study.md


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def fmt_interval(entry: dict | None) -> str:
    if entry is None:
        return ""
    if entry["n"] == 0:
        return "no values (n = 0)"
    bounds = "" if math.isnan(entry["low"]) else f" [{fmt(entry['low'])}, {fmt(entry['high'])}]"
    return f"{fmt(entry['mean'])}{bounds} (n = {entry['n']})"


def fmt_p(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def sub_runs_line(sub_runs: dict) -> str:
    """study.md's count of the sub-runs, naming those without numbers."""
    parts = [f"**Sub-runs**: {sub_runs['total']}, {sub_runs['done']} done"]
    for key, what in (("diverged", "diverged"), ("blocked", "blocked by a diverged one"),
                      ("unranked", "not trained (their search ranked fewer distinct architectures than `--top`)"),
                      ("damaged", "with a damaged result.json"), ("pending", "not run yet")):
        if sub_runs[key]:
            parts.append(f"{len(sub_runs[key])} {what} ({', '.join(sub_runs[key])})")
    missing = len(sub_runs["diverged"]) + len(sub_runs["blocked"])
    note = (" The tables below lack the numbers of the diverged and blocked ones (counted, never imputed)."
            if missing else "")
    return "; ".join(parts) + "." + note


POWER_TEXT = ("\"n of a for 80% power\": the n at which the row's one-sided test would detect the effect observed "
              "here with 80% power at 0.05, by Noether's (1987) normal approximation from the observed probability "
              "of superiority p̂ (Mann-Whitney: P(a > b), the U statistic over n_a n_b; Wilcoxon: P(d_i + d_j > 0) "
              "over the Walsh pairs of the differences d from b): N = (z₀.₉₅ + z₀.₈)² / (12 c (1 − c) (p̂ − ½)²) "
              "in all with a's share c kept as observed, or n = (z₀.₉₅ + z₀.₈)² / (3 (p̂ − ½)²) for the signed-rank "
              "test; raised to the smallest n whose exact test can reach p < 0.05 at all. \"none\": the observed "
              "effect is not in the tested direction. A planning figure: an effect observed on few runs is "
              "itself uncertain, and near complete separation (p̂ close to 1) the approximation overstates the n "
              "(the exact test gets there sooner).")
RETEST_TEXT = ("Noise ceiling: with 2 or more train seeds per random architecture, the final score's test-retest "
               "Spearman ρ₁ (each architecture's first train seed against its second) says how much of the score "
               "is training noise. The final score is the mean of k seeds, whose reliability is k ρ₁ / (1 + "
               "(k − 1) ρ₁) (Spearman-Brown); a proxy, however good, correlates with it at most √ of that "
               "(attenuation by the score's noise), the \"noise ceiling\". \"share of ceiling\" is the proxy's ρ "
               "over it. Spearman stands in for the Pearson correlation the formulas are derived for.")


def fmt_power_n(row: dict) -> str:
    if row.get("test") is None:
        return "–"
    return "none" if row.get("n_for_power") is None else str(row["n_for_power"])


def retest_line(retest: dict | None) -> str:
    """The noise ceiling's inputs under the proxy table."""
    if retest is None:
        return "Test-retest of the final score: not measured (one train seed per architecture: `--train-seeds 2`)."
    parts = [f"{metric} ρ₁ = {fmt(entry['rho'])} [{fmt(entry['low'])}, {fmt(entry['high'])}] (n = {entry['n']}), "
             f"reliability of the {entry['train_seeds']}-seed mean {fmt(entry['mean_reliability'])}, ceiling "
             f"{fmt(entry['ceiling'])}" for metric, entry in retest.items()]
    return "Test-retest of the final score over the random architectures: " + "; ".join(parts) + "."


def proxy_target(metric: str) -> str:
    """What the proxy is correlated with, as the proxy table names it: IS, or −FID (lower FID is better)."""
    return "IS" if metric == "IS" else "−FID"


def ceiling_exceeded_line(rows: list[dict]) -> str | None:
    """A note under the proxy table when a proxy's ρ is above its noise ceiling's point estimate: the ceiling
    then says less than it seems (it is a function of the test-retest ρ₁, whose interval the line above gives)."""
    over = [f"{row['arm']} {proxy_target(row['metric'])} {fmt(row['share_of_ceiling'])}"
            for row in rows if row.get("share_of_ceiling") is not None and row["share_of_ceiling"] > 1]
    if not over:
        return None
    return (f"A share above 1 ({', '.join(over)}): the proxy tracks the final score more closely than the test-retest "
            f"estimate allows any proxy to. The ceiling is computed from the point estimate of ρ₁, which is itself "
            f"uncertain at this n (its interval above): read it as a rough guide, not a bound.")


def markdown(summary: dict) -> str:
    """study.md: one table per question, then the per-search details."""
    settings = summary["settings"]
    lines = [f"# Study: preset {settings['preset']}, arms {', '.join(settings['arms'])}", "",
             f"{settings['seeds']} searches per arm, each search's top {settings['top']} trained with "
             f"{settings['train_seeds']} train seed(s); {settings['random_archs']} uniformly random architectures "
             f"trained the same way. A training's score is the mean of its last evaluations (train's "
             f"`--tail-evals`). Intervals are 95% bootstrap percentile intervals (of means from {MIN_INTERVAL_N} "
             f"values on, below that the values alone; pairs resampled for Spearman); every test is one-sided at "
             f"0.05. \"smallest p\" is the lowest p-value the test can reach with these n: where it "
             f"is above 0.05 the verdict cannot be \"holds\", whatever the effect.", "", POWER_TEXT, "",
             RETEST_TEXT, "", sub_runs_line(summary["sub_runs"]), ""]
    for question in summary["questions"]:
        lines += [f"## {question['title']}", ""]
        if question["id"] == "proxy-vs-final":
            lines += ["| proxy: shared GANs of | final score | Spearman ρ [95% CI] | n | p | verdict | noise ceiling "
                      "| share of ceiling | paper |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for row in question["rows"]:
                arm = f"**{row['arm']}** (headline)" if row["headline"] else row["arm"]
                lines.append(f"| {arm} | proxy IS vs {proxy_target(row['metric'])} | {fmt(row['rho'])} "
                             f"[{fmt(row['low'])}, "
                             f"{fmt(row['high'])}] | {row['n']} | {fmt_p(row['p'])} | {row['verdict']} | "
                             f"{fmt(row.get('ceiling'))} | {fmt(row.get('share_of_ceiling'))} | {row['anchor']} |")
            lines += ["", retest_line(summary["random_baseline"].get("test_retest"))]
            exceeded = ceiling_exceeded_line(question["rows"])
            if exceeded is not None:
                lines += ["", exceeded]
        else:
            lines += ["| a | b | metric | a: mean [95% CI] (n) | b | test | p (a better) | smallest p | verdict "
                      "| n of a for 80% power |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for row in question["rows"]:
                b = fmt_interval(row["b_interval"]) if row["b_interval"] is not None else fmt(row["b_value"])
                lines.append(f"| {row['a']} | {row['b']} | {row['metric']} | {fmt_interval(row['a_interval'])} | {b} | "
                             f"{row['test'] or '–'} | {fmt_p(row['p'])} | {fmt_p(row['smallest_p'])} | "
                             f"{row['verdict']} | {fmt_power_n(row)} |")
        lines.append("")
    lines += ["## Searches", "", "| arm | seed | collapsed stages | distinct archs ranked | top-1 proxy IS | final IS "
              "| final FID | top-1 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, entry in summary["arms"].items():
        for search in entry["searches"]:
            top1 = search["top"][0] if search["top"] else {}
            collapsed = search["collapsed_stages"]
            lines.append(f"| {arm} | {search['seed']} | {'–' if collapsed is None else collapsed or 'none'} | "
                         f"{'–' if search['ranked'] is None else search['ranked']} | {fmt(top1.get('proxy_is'))} | "
                         f"{fmt(search['final_is'])} | {fmt(search['final_fid'])} | "
                         f"{' '.join(map(str, search['top1_arch'])) if search['top1_arch'] else '–'} |")
    baseline = summary["random_baseline"]
    lines += ["", f"Random architectures: IS {fmt_interval(baseline['final_is'])}, median "
              f"{fmt(baseline['median_is'])}; FID {fmt_interval(baseline['final_fid'])}, median "
              f"{fmt(baseline['median_fid'])}.", ""]
    return "\n".join(lines)


__all__ = ["FORMAT", "PAPER_SPEARMAN", "markdown", "summarize", "training_score"]
