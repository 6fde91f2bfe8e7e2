"""A study's summary, computed from its sub-runs' own files alone: study.json's numbers and study.md.

Where each number comes from:
  - a training's final score: the mean IS and FID of its last `--tail-evals` evaluations (its result.json's
    `tail_mean`, from its log's `eval` events: one evaluation of a small GAN swings with its last steps);
  - a search's score: its top-1 architecture's final score, averaged over the train seeds;
  - a search's proxy curve: the mean reward of each search iteration (log.jsonl's `iteration` events);
  - a random architecture's proxy: its reward on each finished search of the proxy arm (proxy/*), averaged.
A diverged or blocked sub-run has no score (None), and is counted, never imputed.
"""

from __future__ import annotations

import json
import math
import statistics as pystats
from dataclasses import asdict
from pathlib import Path

from ..run_dir import LOG, RESULT, JsonlLog
from .plan import StudySettings, SubRun, random_archs
from .statistics import compare, compare_to_value, mean_interval, spearman_interval

FORMAT = "autogan_fast.study/1"
PAPER_SPEARMAN = 0.779  # AutoGAN's reported correlation of the shared GAN's IS with the retrained IS
CONTROLLER_ARMS = ("mlas", "slas", "mlas-no-reset")  # the arms whose architectures a controller chose


def read_result(run_dir: Path) -> dict | None:
    """A finished run's result.json, or None."""
    return read_json(run_dir / RESULT)


def training_score(run_dir: Path) -> dict | None:
    """A finished training's final score (its result.json's `tail_mean`: the mean IS and FID of its last
    `--tail-evals` evaluations); None if the training did not finish (diverged, blocked, or not run)."""
    result = read_result(run_dir)
    return None if result is None else result["tail_mean"]


def proxy_curve(run_dir: Path) -> list[float]:
    """The mean reward of each search iteration, in order."""
    events = JsonlLog(run_dir / LOG).read()
    return [e["mean_inception_score"] for e in sorted((e for e in events if e.get("event") == "iteration"),
                                                       key=lambda e: e["search_iter"])]


def interval(values: list[float]) -> dict:
    """Mean and 95% Student-t interval as study.json writes it (NaN when there are no values)."""
    if not values:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    estimate = mean_interval(values)
    return {"mean": estimate.estimate, "low": estimate.low, "high": estimate.high, "n": estimate.n}


def mean_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return pystats.fmean(present) if present else None


def trained_scores(study_dir: Path, runs: list[SubRun]) -> dict:
    """The trainings `runs` (one architecture, its train seeds): each seed's score and their mean."""
    seeds = [{"train_seed": run.train_seed, "run": run.name, **(training_score(study_dir / run.name) or {})}
             for run in runs]
    return {"trainings": seeds, "final_is": mean_or_none([s.get("inception_score") for s in seeds]),
            "final_fid": mean_or_none([s.get("fid") for s in seeds])}


def summarize_arm(study_dir: Path, settings: StudySettings, plan: list[SubRun], arm: str) -> dict:
    searches = []
    for run in (r for r in plan if r.command == "search" and r.arm == arm):
        result = read_result(study_dir / run.name)
        entry = {"seed": run.seed, "run": run.name, "finished": result is not None,
                 "finding": None if result is None else result.get("finding", True),
                 "collapsed_stages": None if result is None else result.get("collapsed_stages", []),
                 "proxy_curve": proxy_curve(study_dir / run.name) if (study_dir / run.name / LOG).exists() else [],
                 "top": [], "top1_arch": None, "final_is": None, "final_fid": None}
        for rank in range(1, settings.top + 1):
            ranked = result["archs"][rank - 1] if result is not None and rank <= len(result["archs"]) else None
            trainings = [r for r in plan if r.command == "train" and r.needs == (run.name,) and r.rank == rank]
            entry["top"].append({"rank": rank, "arch": ranked and ranked["arch"],
                                 "proxy_is": ranked and ranked["inception_score"],
                                 **trained_scores(study_dir, trainings)})
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
        archs.append({"index": index, "arch": arch, **trained_scores(study_dir, trainings)})
    final_is = [a["final_is"] for a in archs if a["final_is"] is not None]
    final_fid = [a["final_fid"] for a in archs if a["final_fid"] is not None]
    return {"archs": archs, "final_is": interval(final_is), "final_fid": interval(final_fid),
            "median_is": pystats.median(final_is) if final_is else None,
            "median_fid": pystats.median(final_fid) if final_fid else None}


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


def proxy_on(study_dir: Path, runs: list[SubRun], baseline: dict) -> dict:
    """Proxy vs final for the rescoring sub-runs `runs` (one arm's searches): each random architecture's
    proxy IS, averaged over the searches, against its final scores; and each search's Spearman alone."""
    proxies = [(run.name, result) for run in runs if (result := read_result(study_dir / run.name)) is not None]
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
    by_arm = {arm: proxy_on(study_dir, [r for r in plan if r.command == "proxy" and r.arm == arm], baseline)
              for arm in arms}
    return {"headline": arms[0], **by_arm[arms[0]], "by_arm": by_arm, "anchor": PAPER_SPEARMAN}


def smallest_p(test: str, n_a: int, n_b: int) -> float:
    """The smallest one-sided p-value the test can reach with these n (no ties): below ALPHA or the
    verdict can never be "holds", however large the effect."""
    if test.startswith("Wilcoxon"):
        return 0.5 ** n_a
    return 1.0 / math.comb(n_a + n_b, n_a)


def comparison_row(label_a: str, a: list[float], label_b: str, b: list[float] | float, metric: str) -> dict:
    """One row of a question's table: "a is better than b" on `metric` (IS: higher, FID: lower), `b` a list
    (Mann-Whitney) or one value (Wilcoxon signed-rank against it)."""
    sign = 1.0 if metric == "IS" else -1.0  # the tests ask "larger"; a lower FID is better
    row = {"a": label_a, "b": label_b, "metric": metric, "a_interval": interval(a),
           "b_interval": interval(b) if isinstance(b, list) else None,
           "b_value": None if isinstance(b, list) else b}
    if not a or (isinstance(b, list) and not b) or b is None:
        return {**row, "test": None, "p": None, "smallest_p": None, "verdict": "not shown", "note": "no values"}
    if isinstance(b, list):
        result = compare([sign * v for v in a], [sign * v for v in b])
    else:
        result = compare_to_value([sign * v for v in a], sign * b)
    return {**row, "test": result.test, "p": result.p_greater, "p_reverse": result.p_less,
            "smallest_p": smallest_p(result.test, result.n_a, result.n_b), "verdict": result.verdict}


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
            spearman_rows.append({"arm": arm, "headline": arm == proxy["headline"], "metric": metric, **rho,
                                  "verdict": verdict, "anchor": proxy["anchor"]})
    found.append({"id": "proxy-vs-final", "title": "Does the proxy (the shared GAN's IS) predict the final score?",
                  "rows": spearman_rows})
    return found


def summarize(study_dir: Path, settings: StudySettings, plan: list[SubRun]) -> dict:
    """Every number of the study, from the sub-runs' files (study.json)."""
    arms = {arm: summarize_arm(study_dir, settings, plan, arm) for arm in settings.arms}
    baseline = summarize_random(study_dir, settings, plan)
    proxy = summarize_proxy(study_dir, settings, plan, baseline)
    return {"format": FORMAT, "settings": settings_dict(settings, study_dir, plan), "arms": arms,
            "random_baseline": baseline, "proxy_vs_final": proxy, "questions": questions(arms, baseline, proxy)}


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
        return json.loads(path.read_text(encoding="utf-8"))
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


def markdown(summary: dict) -> str:
    """study.md: one table per question, then the per-search details."""
    settings = summary["settings"]
    lines = [f"# Study: preset {settings['preset']}, arms {', '.join(settings['arms'])}", "",
             f"{settings['seeds']} searches per arm, each search's top {settings['top']} trained with "
             f"{settings['train_seeds']} train seed(s); {settings['random_archs']} uniformly random architectures "
             f"trained the same way. A training's score is the mean of its last evaluations (train's "
             f"`--tail-evals`). Intervals are 95% (Student t for means, bootstrap for Spearman); every test is "
             f"one-sided at 0.05. \"smallest p\" is the lowest p-value the test can reach with these n: where it "
             f"is above 0.05 the verdict cannot be \"holds\", whatever the effect.", ""]
    for question in summary["questions"]:
        lines += [f"## {question['title']}", ""]
        if question["id"] == "proxy-vs-final":
            lines += ["| proxy: shared GANs of | final score | Spearman ρ [95% CI] | n | p | verdict | paper |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for row in question["rows"]:
                against = "IS" if row["metric"] == "IS" else "−FID"
                arm = f"**{row['arm']}** (headline)" if row["headline"] else row["arm"]
                lines.append(f"| {arm} | proxy IS vs {against} | {fmt(row['rho'])} [{fmt(row['low'])}, "
                             f"{fmt(row['high'])}] | {row['n']} | {fmt_p(row['p'])} | {row['verdict']} | "
                             f"{row['anchor']} |")
        else:
            lines += ["| a | b | metric | a: mean [95% CI] (n) | b | test | p (a better) | smallest p | verdict |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for row in question["rows"]:
                b = fmt_interval(row["b_interval"]) if row["b_interval"] is not None else fmt(row["b_value"])
                lines.append(f"| {row['a']} | {row['b']} | {row['metric']} | {fmt_interval(row['a_interval'])} | {b} | "
                             f"{row['test'] or '–'} | {fmt_p(row['p'])} | {fmt_p(row['smallest_p'])} | "
                             f"{row['verdict']} |")
        lines.append("")
    lines += ["## Searches", "", "| arm | seed | collapsed stages | top-1 proxy IS | final IS | final FID | top-1 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm, entry in summary["arms"].items():
        for search in entry["searches"]:
            top1 = search["top"][0] if search["top"] else {}
            collapsed = search["collapsed_stages"]
            lines.append(f"| {arm} | {search['seed']} | {'–' if collapsed is None else collapsed or 'none'} | "
                         f"{fmt(top1.get('proxy_is'))} | {fmt(search['final_is'])} | {fmt(search['final_fid'])} | "
                         f"{' '.join(map(str, search['top1_arch'])) if search['top1_arch'] else '–'} |")
    baseline = summary["random_baseline"]
    lines += ["", f"Random architectures: IS {fmt_interval(baseline['final_is'])}, median "
              f"{fmt(baseline['median_is'])}; FID {fmt_interval(baseline['final_fid'])}, median "
              f"{fmt(baseline['median_fid'])}.", ""]
    return "\n".join(lines)


__all__ = ["FORMAT", "PAPER_SPEARMAN", "markdown", "summarize", "training_score"]
