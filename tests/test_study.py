"""`python -m autogan_fast.study` end to end at toy sizes: every arm, the summary recomputed from the
sub-runs' own files, a kill and a resume, and bad input."""

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest
from cli_helpers import run_cli_captured, run_to_success
from scipy import stats

from autogan_fast.distributed import World
from autogan_fast.errors import UsageError
from autogan_fast.runs.folder import JsonlLog
from autogan_fast.study import runner
from autogan_fast.study.__main__ import main
from autogan_fast.study.plan import ARMS, StudySettings, build_plan, random_archs
from autogan_fast.study.runner import status

# One iteration per stage, two controller steps, 40-image rewards; 4 G iterations scored twice on 100 images.
TINY_SEARCH = ("--gf-dim 4 --df-dim 4 --latent-dim 8 --max-search-iter 3 --grow-step1 1 --grow-step2 2 "
               "--shared-epoch 1 --dis-bs 300 --gen-bs 16 --ctrl-step 2 --rl-num-eval-img 40 --eval-batch-size 20 "
               "--num-candidate 3 --topk 2 --num-grid-images 4")
TINY_TRAIN = ("--gf-dim 8 --df-dim 8 --latent-dim 8 --gen-bs 16 --dis-bs 16 --n-critic 2 --max-iter 4 --val-freq 2 "
              "--num-eval-imgs 100 --eval-batch-size 50 --num-grid-images 4")
TINY = ["--search-flags", TINY_SEARCH, "--train-flags", TINY_TRAIN, "--quiet"]
DIVERGED = 3  # the exit status of a study whose questions lost sub-runs to a divergence (a diverged run's)


def run(argv, capsys):
    return run_cli_captured(main, argv, capsys)


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    """Every arm, one search each, 4 random architectures: the study the summary tests read."""
    out = tmp_path_factory.mktemp("study") / "s"
    run_to_success(main, [*TINY, "--seeds", "1", "--random-archs", "4", "--out", out])
    return out


def test_every_sub_run_finishes_as_an_ordinary_run_folder(full_study):
    settings = StudySettings(seeds=1, random_archs=4, search_flags=TINY_SEARCH, train_flags=TINY_TRAIN)
    plan = build_plan(settings)
    # 4 searches, 4 proxy rescorings (one per arm's search), 4 top-1 trainings, 4 random architectures
    assert [run.command for run in plan].count("search") == len(ARMS)
    assert len(plan) == len(ARMS) * 3 + 4
    by_name = {run.name: run for run in plan}
    for run in plan:
        assert status(full_study, run, by_name) == "done", run.name
        if run.command != "proxy":  # what `search` / `train` leave: config, log, checkpoint, result
            assert {"config.json", "log.jsonl", "checkpoint.pt", "result.json"} <= {
                p.name for p in (full_study / run.name).iterdir()}
    for name in ("study.json", "study.md", "config.json"):
        assert (full_study / name).is_file()


def final_score(run_dir, tail=3):
    """A training's final score as the study defines it (train's default --tail-evals 3), read here
    straight from its log."""
    evals = [e for e in JsonlLog(run_dir / "log.jsonl", "iter").read() if e["event"] == "eval"][-tail:]
    return statistics.fmean(e["inception_score"] for e in evals), statistics.fmean(e["fid"] for e in evals)


def test_summary_numbers_are_recomputed_from_the_sub_runs_files(full_study):
    summary = json.loads((full_study / "study.json").read_text())
    archs = random_archs(4, 1)
    random_is = [final_score(full_study / f"train/random-{i:03d}-tseed1")[0] for i in range(4)]
    random_fid = [final_score(full_study / f"train/random-{i:03d}-tseed1")[1] for i in range(4)]
    baseline = summary["random_baseline"]
    assert [a["arch"] for a in baseline["archs"]] == archs
    assert [a["final_is"] for a in baseline["archs"]] == pytest.approx(random_is)
    assert baseline["median_is"] == pytest.approx(statistics.median(random_is))
    assert baseline["median_fid"] == pytest.approx(statistics.median(random_fid))
    for arm in ARMS:
        search = summary["arms"][arm]["searches"][0]
        result = json.loads((full_study / f"search/{arm}-seed1/result.json").read_text())
        assert search["top1_arch"] == result["archs"][0]["arch"]
        assert search["final_is"] == pytest.approx(final_score(full_study / f"train/{arm}-seed1-rank1-tseed1")[0])
        log = JsonlLog(full_study / f"search/{arm}-seed1/log.jsonl").read()
        assert search["proxy_curve"] == [e["mean_inception_score"] for e in log if e["event"] == "iteration"]
    proxy_vs_final = summary["proxy_vs_final"]
    assert proxy_vs_final["headline"] == "slas"  # the default: slas first (its shared GAN trains every decision)
    for arm in ARMS:
        proxy = json.loads((full_study / f"proxy/{arm}-seed1/result.json").read_text())
        assert [a["arch"] for a in proxy["archs"]] == archs
        rho = stats.spearmanr([a["proxy_is"] for a in proxy["archs"]], random_is).statistic
        reported = proxy_vs_final["by_arm"][arm]["spearman_is"]
        assert reported["n"] == 4
        assert (math.isnan(rho) and reported["rho"] is None) or reported["rho"] == pytest.approx(rho)
    assert proxy_vs_final["spearman_is"] == proxy_vs_final["by_arm"]["slas"]["spearman_is"]
    pooled = [summary["arms"][arm]["searches"][0]["final_is"] for arm in ("mlas", "slas", "mlas-no-reset")]
    row = next(r for r in summary["questions"][0]["rows"] if r["a"].startswith("searched") and r["metric"] == "IS")
    assert row["a_interval"]["mean"] == pytest.approx(statistics.fmean(pooled))
    assert row["b_value"] == pytest.approx(statistics.median(random_is))


def test_a_finished_study_rewrites_its_summary_and_runs_nothing(full_study, capsys):
    results = {p: p.stat().st_mtime_ns for p in full_study.glob("*/*/result.json")}
    code, stdout, _ = run(["--resume", str(full_study), "--quiet"], capsys)
    assert code == 0 and "study.md" in stdout
    assert {p: p.stat().st_mtime_ns for p in full_study.glob("*/*/result.json")} == results


def test_a_killed_study_resumes_and_skips_what_is_done(tmp_path, capsys):
    out = tmp_path / "s"
    argv = [*TINY, "--arms", "mlas", "random", "--seeds", "1", "--random-archs", "3", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "autogan_fast.study", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "search" / "mlas-seed1" / "result.json"
    deadline = time.monotonic() + 300
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-way through the second search, or soon after the first
    process.wait()
    assert first.exists(), "the study was killed before its first sub-run finished"
    done_before = first.stat().st_mtime_ns
    code, _, _ = run(["--resume", str(out), "--quiet"], capsys)
    assert code == 0
    assert first.stat().st_mtime_ns == done_before  # the finished search was not run again
    summary = json.loads((out / "study.json").read_text())
    assert [len(summary["arms"][arm]["searches"]) for arm in ("mlas", "random")] == [1, 1]
    assert all(a["final_is"] is not None for a in summary["random_baseline"]["archs"])


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds must be positive"),  # no search at all
    (["--proxy-arms", "slas", "--arms", "mlas"], "--proxy-arms must name distinct arms of the study (mlas)"),
    (["--search-flags", "--seed 3"], "--search-flags must not set --seed"),  # the study sets each sub-run's seed
    (["--train-flags=--out=x"], "--train-flags must not set --out"),  # the = spelling too
    (["--train-flags", "--max-iter '4"], "--train-flags"),  # unbalanced quote: shlex refuses it
    # every sub-run's flags go through its command's parser and checks first: no folder that --resume could
    # never continue (it refuses new settings), and the message on stderr, not in a sub-run's output file
    (["--search-flags", "--g-lr -1"], "the study's searches would be refused: --g-lr must be positive"),
    (["--train-flags", "--max-iter 0"], "the study's trainings would be refused: --max-iter must be positive"),
    (["--search-flags", "--bogus 3"], "unrecognized arguments: --bogus 3"),  # was exit 2 with an empty stderr
    (["--search-flags", "--se 3"], "unrecognized arguments: --se 3"),  # was ambiguous, equally silent
    # an abbreviation of a reserved flag used to pass the check: mlas ran as mlas-no-reset, silently
    (["--search-flags", "--dynamic-reset-thr 0"], "unrecognized arguments: --dynamic-reset-thr 0"),
    (["--search-flag", "--g-lr 1"], "unrecognized arguments: --search-flag"),  # the study's own flags too
])
def test_bad_settings_are_refused_before_the_folder_exists(tmp_path, capsys, argv, message):
    code, _, stderr = run([*argv, "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_resume_with_arms_grows_a_finished_study_by_whole_arms(tmp_path, capsys):
    """--resume DIR --arms adds arms: their sub-runs run, what is done is kept, the saved plan grows."""
    out = tmp_path / "s"
    run_to_success(main, [*TINY, "--arms", "random", "--seeds", "1", "--random-archs", "2", "--out", str(out)])
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/*/result.json")}
    code, _, _ = run(["--resume", str(out), "--arms", "random", "slas", "--quiet"], capsys)
    assert code == 0
    assert {p: p.stat().st_mtime_ns for p in done} == done  # the random arm's search and trainings kept
    saved = json.loads((out / "config.json").read_text())
    assert saved["settings"]["arms"] == ["random", "slas"]
    assert {run["name"] for run in saved["plan"]} == {run.name for run in build_plan(StudySettings(
        arms=("random", "slas"), seeds=1, random_archs=2, search_flags=TINY_SEARCH, train_flags=TINY_TRAIN))}
    summary = json.loads((out / "study.json").read_text())
    assert summary["proxy_vs_final"]["headline"] == "slas"  # the default headline, now that slas is in
    assert summary["arms"]["slas"]["searches"][0]["final_is"] is not None
    code, _, stderr = run(["--resume", str(out), "--arms", "slas"], capsys)  # an arm cannot be dropped
    assert code == 2 and "cannot drop random" in stderr and len(stderr.strip().splitlines()) == 1
    assert json.loads((out / "config.json").read_text()) == saved


def test_resume_refuses_new_settings_and_folders_that_are_no_study(full_study, tmp_path, capsys):
    code, _, stderr = run(["--resume", str(full_study), "--seeds", "5"], capsys)
    assert code == 2 and "--seeds cannot change when resuming" in stderr
    search_run = full_study / "search" / "mlas-seed1"
    code, _, stderr = run(["--resume", str(search_run)], capsys)
    assert code == 2 and "is not a study's" in stderr


def test_a_sub_run_refused_by_its_command_names_the_sub_run(tmp_path, capsys):
    """What only running finds (here a missing data folder) is refused by the sub-run, named."""
    code, _, stderr = run([*TINY, "--arms", "slas", "--seeds", "1", "--random-archs", "1", "--dataset", "folder",
                           "--data-path", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "study sub-run search/slas-seed1: " in stderr and "no-such-folder" in stderr


def test_settings_validate_raises_usage_error():
    with pytest.raises(UsageError, match="--arms must name distinct arms"):
        StudySettings(arms=("mlas", "mlas")).validate()


def test_torchrun_ranks_take_whole_sub_runs_in_turn(tmp_path, monkeypatch):
    """Rank r of W runs the plan's entries r, r + W, ...; here rank 1 of 2, with rank 0's share already done
    (as another process would leave it): rank 1 runs exactly its own share, each after its needs."""
    settings = StudySettings(arms=("mlas", "slas"), seeds=2, random_archs=3)
    plan = build_plan(settings)

    results = {"search": {"archs": [{"arch": random_archs(1, 0)[0], "inception_score": 2.0}]},  # what the
               "proxy": {"archs": [{"proxy_is": 2.0}] * 3},  # summary reads: else a result is damaged, rerun
               "train": {"tail_mean": {"inception_score": 2.0, "fid": 50.0}}}

    def finish(run):
        (tmp_path / run.name).mkdir(parents=True, exist_ok=True)
        (tmp_path / run.name / "result.json").write_text(json.dumps(results[run.command]))

    for run in plan[0::2]:
        finish(run)
    ran = []

    def fake_execute(study_dir, run, settings):
        assert all((study_dir / need / "result.json").exists() for need in run.needs)
        ran.append(run.name)
        finish(run)

    monkeypatch.setattr(runner, "execute", fake_execute)
    runner.run_plan(tmp_path, settings, plan, World(rank=1, size=2, local_rank=1), quiet=True)
    assert ran == [run.name for run in plan[1::2]]


def test_a_diverged_search_is_kept_and_blocks_what_needs_it(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, stderr = run([*TINY, "--arms", "mlas", "--seeds", "1", "--random-archs", "3", "--search-flags",
                           TINY_SEARCH + " --g-lr 1e30 --d-lr 1e30", "--out", str(out)], capsys)
    # said on stderr, and a diverged run's exit status: the questions lost the numbers of 3 of 6 sub-runs
    assert code == DIVERGED
    assert ("warning: 1 of 6 sub-runs diverged (search/mlas-seed1) and 2 are blocked by them "
            "(proxy/mlas-seed1, train/mlas-seed1-rank1-tseed1)") in stderr
    assert len(stderr.strip().splitlines()) == 1
    plan = {run.name: run for run in build_plan(StudySettings(arms=("mlas",), seeds=1, random_archs=3))}
    assert status(out, plan["search/mlas-seed1"], plan) == "diverged"
    assert status(out, plan["train/mlas-seed1-rank1-tseed1"], plan) == "blocked"
    assert status(out, plan["proxy/mlas-seed1"], plan) == "blocked"
    summary = json.loads((out / "study.json").read_text())
    assert summary["arms"]["mlas"]["searches"][0]["final_is"] is None  # counted as missing, never imputed
    assert summary["arms"]["mlas"]["final_is"]["n"] == 0
    assert all(a["final_is"] is not None for a in summary["random_baseline"]["archs"])
    assert summary["questions"][0]["rows"][0]["verdict"] == "not shown"
    assert summary["sub_runs"] == {"total": 6, "done": 3, "diverged": ["search/mlas-seed1"],
                                   "blocked": ["proxy/mlas-seed1", "train/mlas-seed1-rank1-tseed1"], "unranked": [],
                                   "damaged": [], "pending": []}
    report = (out / "study.md").read_text()
    assert "**Sub-runs**: 6, 3 done; 1 diverged (search/mlas-seed1); 2 blocked by a diverged one" in report
    assert run(["--resume", str(out), "--quiet"], capsys)[0] == DIVERGED  # as often as it is asked


def test_top_beyond_a_searchs_distinct_architectures_trains_what_it_ranked(tmp_path, capsys):
    """A search that keeps one distinct architecture (--topk 1) and --top 2: its top-1 is trained, rank 2 is
    counted as having nothing to train (it used to stop every resume with "--rank 2 is out of range")."""
    out = tmp_path / "s"
    argv = [*TINY, "--arms", "slas", "--seeds", "1", "--random-archs", "1", "--top", "2", "--search-flags",
            TINY_SEARCH + " --topk 1", "--out", str(out)]
    code, _, stderr = run(argv, capsys)
    assert code == 0, stderr
    assert "note: --top 2 is more than some searches ranked (search/slas-seed1 ranked 1 distinct" in stderr
    assert "1 planned training(s) had nothing to train" in stderr
    summary = json.loads((out / "study.json").read_text())
    assert summary["sub_runs"]["unranked"] == ["train/slas-seed1-rank2-tseed1"]
    assert summary["sub_runs"]["done"] == 4 and summary["sub_runs"]["total"] == 5
    search = summary["arms"]["slas"]["searches"][0]
    assert search["ranked"] == 1 and search["final_is"] is not None  # the top-1 was trained
    assert "1 not trained (their search ranked fewer distinct architectures than `--top`)" in (
        out / "study.md").read_text()
    assert not (out / "train" / "slas-seed1-rank2-tseed1").exists()
    assert run(["--resume", str(out), "--quiet"], capsys)[0] == 0  # no dead end


def without_wall_time(result):
    return {k: v for k, v in result.items() if k != "wall_seconds"}


def test_a_damaged_sub_run_result_is_named_and_written_again(full_study, tmp_path, capsys):
    """A result.json the summary cannot read (here `{}` for a training, and not JSON for a search) used to
    crash the summary (KeyError: 'tail_mean'); each is named in one line, kept aside, and its sub-run resumed,
    which writes it again from its checkpoint: the same result and the same study.json."""
    out = tmp_path / "s"
    shutil.copytree(full_study, out)
    damaged = {"train/random-001-tseed1": "{}", "search/slas-seed1": "{not json"}
    originals = {name: json.loads((out / name / "result.json").read_text()) for name in damaged}
    for name, text in damaged.items():
        (out / name / "result.json").write_text(text)
    code, _, stderr = run(["--resume", str(out), "--quiet"], capsys)
    assert code == 0, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith("warning: study sub-run search/slas-seed1: its result.json is damaged (not JSON")
    assert lines[1].startswith("warning: study sub-run train/random-001-tseed1: its result.json is damaged (no "
                               "'tail_mean'")
    for name, text in damaged.items():
        assert (out / name / "result.json.damaged").read_text() == text  # kept, nothing lost
        rewritten = json.loads((out / name / "result.json").read_text())
        assert without_wall_time(rewritten) == without_wall_time(originals[name])
    summary, before = (json.loads((folder / "study.json").read_text()) for folder in (out, full_study))
    assert summary["random_baseline"] == before["random_baseline"] and summary["arms"] == before["arms"]
