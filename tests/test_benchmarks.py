"""The method benchmarks' rows stay runnable: every row's derived config (a shipped config rewritten for
CIFAR-10 and the common budget) is accepted by `lit-kd fit`, with the budget it claims."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks import feature_methods_cifar10 as feature
from benchmarks import logit_methods_cifar10 as logit
from benchmarks._method_runs import Row, derive_config
from lit_kd.cli import main

CASES = ([(row, student) for row in logit.ROWS for student in logit.STUDENTS.values()]
         + [(row, feature.STUDENT) for row in feature.CNN_ROWS] + [(row, feature.VIT_STUDENT) for row in feature.VIT_ROWS])


@pytest.mark.parametrize(("row", "student"), CASES, ids=[f"{r.tag}-{s['name']}" for r, s in CASES])
def test_every_benchmark_row_is_a_config_lit_kd_fit_accepts(row: Row, student: dict, tmp_path: Path, monkeypatch,
                                                            capsys):
    monkeypatch.setattr("benchmarks._method_runs.cifar10_dir", lambda: tmp_path / "cifar10")  # no unpacking
    config = derive_config(row, student, epochs=2, seed=1, out=tmp_path / "run", limit_train_batches=None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_.value.code in (0, None)
    parsed = yaml.safe_load(capsys.readouterr().out)
    model = parsed["model"]["init_args"]
    assert parsed["trainer"]["max_epochs"] == 2 and parsed["seed_everything"] == 1
    assert parsed["data"]["init_args"]["dataset"] == "cifar10"
    networks = model.get("peers") or [model.get("student")]
    assert all(network["name"] == student["name"] for network in networks)
    if not row.keep_optimizer:  # the common budget: SGD 0.05, cosine over the epochs, batch 64
        assert model["optimizer"]["init_args"]["lr"] == 0.05
        assert model["lr_scheduler"]["init_args"]["T_max"] == 2
        assert parsed["data"]["init_args"]["batch_size"] == 64


def test_a_finished_row_is_reused_only_under_the_same_config(tmp_path: Path, monkeypatch):
    """run_row reuses a finished row whose saved config is the one the budget derives now; a row of
    another budget (or an unfinished one) is started over in a clean folder."""
    import json
    import subprocess

    from benchmarks._method_runs import run_row

    monkeypatch.setattr("benchmarks._method_runs.cifar10_dir", lambda: tmp_path / "cifar10")
    row, student = logit.ROWS[0], logit.STUDENTS[next(iter(logit.STUDENTS))]
    out = tmp_path / f"{row.tag}-{student['name']}-seed0"
    launched: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda args, **_: launched.append(args) or subprocess.CompletedProcess(
        args, 1, "", "not run in the test"))

    def finished(config: dict) -> None:
        (out / "logs" / "version_0").mkdir(parents=True, exist_ok=True)
        (out / "logs" / "version_0" / "summary.json").write_text(json.dumps({"last": {"test_acc": 0.5}}))
        (out / "step_times.json").write_text(json.dumps({"median_s": 0.1}))
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    finished(derive_config(row, student, 2, 0, out, None))
    record = run_row(row, student, 2, 0, tmp_path, None)
    assert not launched and record["step_s"] == 0.1 and not record.get("failed")

    finished(derive_config(row, student, 3, 0, out, None))  # another budget in the same folder
    record = run_row(row, student, 2, 0, tmp_path, None)
    assert len(launched) == 1 and record["failed"]
    assert not (out / "step_times.json").exists()  # the old run's files are gone
    assert yaml.safe_load((out / "config.yaml").read_text()) == derive_config(row, student, 2, 0, out, None)


def test_report_only_fits_nothing_and_the_table_says_what_is_missing_or_shared(tmp_path: Path, monkeypatch):
    """--report-only launches no fit and reports an unfinished row as not run; a step-time ratio taken
    while the machine was busy (load above cores + 1) is starred, a clean one is not."""
    import subprocess

    from benchmarks._method_runs import run_row, table

    monkeypatch.setattr("benchmarks._method_runs.cifar10_dir", lambda: tmp_path / "cifar10")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("report-only must not fit"))
    row, student = logit.ROWS[1], logit.STUDENTS["resnet20_a"]
    record = run_row(row, student, 2, 0, tmp_path, None, report_only=True)
    assert record == {"tag": row.tag, "student": "resnet20_a", "seed": 0, "not_run": True}
    assert not (tmp_path / f"{row.tag}-resnet20_a-seed0").exists()

    def run(tag: str, step_s: float, load: list[float]) -> dict:
        acc = {"val_acc": 0.5, "test_acc": 0.5}
        return {"tag": tag, "student": "s", "seed": 0, "step_s": step_s, "load": load, "cpus": 2,
                "last": acc, "best_val": acc, "best_test": acc}

    lines = table([run("kd", 0.1, [2.0, 2.1]), run("quiet", 0.2, [1.9, 2.2]), run("busy", 0.3, [2.0, 4.5]),
                   {"tag": "later", "student": "s", "seed": 0, "not_run": True}])
    cells = {line.split(" | ")[1]: line.split(" | ") for line in lines[2:]}
    assert cells["quiet"][7] == "2.00" and cells["busy"][7] == "3.00*"
    assert cells["later"][2] == "not run yet"


def test_paper_claims_put_each_published_figure_beside_kd():
    from benchmarks._method_runs import paper_claims

    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in paper_claims(["kd", "dkd", "nkd"])[4:]}
    assert rows["dkd"][1:3] == ["71.97", "+1.31"] and rows["kd"][2] == "—"
    assert rows["nkd"][1] == "no figure for this pair in the specs"
