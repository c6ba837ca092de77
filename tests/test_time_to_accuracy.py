"""The time-to-accuracy benchmark's runners train with the recipe lit_kd trains with (issue 17, item 4).

The plain loop and the torchdistill config read the recipe from the lit_kd config rather than repeating
its numbers; these tests check that what they read is what ``lit-kd fit`` builds from the same file.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import yaml

from benchmarks.time_to_accuracy import (DEFAULT_CONFIG, build_optimizer, build_scheduler, crop_flip,
                                         recipe_from_config, torchdistill_config)
from lit_kd.cli import LitKDCLI
from lit_kd.data import KDDataModule
from lit_kd.methods.base import StudentModule


@pytest.fixture(scope="module")
def recipe():
    return recipe_from_config(DEFAULT_CONFIG)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # no training here
def test_plain_loop_reads_the_recipe_lit_kd_fit_builds(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's run folders land here, not in the repository
    teacher = tmp_path / "teacher.pth"  # the architecture's weights; the shared teacher may be absent
    torch.save(timm.create_model("resnet56_a", num_classes=10).state_dict(), teacher)
    cli = LitKDCLI(StudentModule, KDDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                   args=["--config", str(DEFAULT_CONFIG), "--model.init_args.teacher.checkpoint", str(teacher)])
    model, data, trainer = cli.model, cli.datamodule, cli.trainer

    assert (cli.config["seed_everything"], trainer.max_epochs) == (recipe.seed, recipe.epochs)
    assert (data.batch_size, data.eval_batch_size, data.val_split) == (recipe.batch_size, recipe.eval_batch_size, 0)
    assert (model.temperature, model.ce_weight, model.kd_weight, model.label_smoothing) == (
        recipe.temperature, recipe.ce_weight, recipe.kd_weight, recipe.label_smoothing)
    assert model.scheduler_interval == recipe.scheduler_interval
    assert (model.channels_last, model.compile_networks) == (recipe.channels_last, recipe.compile)
    assert {k: v for k, v in model.compile_options.items() if v is not None} == recipe.compile_options
    assert (model.hparams["teacher"]["name"], model.hparams["student"]["name"]) == (
        recipe.teacher["name"], recipe.student["name"])
    for adapter in (model.student_input, model.teacher_input):
        assert adapter.mean.flatten().tolist() == pytest.approx(recipe.mean)
        assert adapter.std.flatten().tolist() == pytest.approx(recipe.std)

    # The optimizer and the whole learning-rate schedule, step by step.
    lit_params = list(model.trainable_parameters())
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in lit_params]
    lit_optimizer, plain_optimizer = model.optimizer_factory(lit_params), build_optimizer(recipe, plain_params)
    assert type(lit_optimizer) is type(plain_optimizer)
    strip = lambda group: {k: v for k, v in group.items() if k != "params"}  # noqa: E731
    assert strip(lit_optimizer.param_groups[0]) == strip(plain_optimizer.param_groups[0])
    lit_schedule, plain_schedule = model.scheduler_factory(lit_optimizer), build_scheduler(recipe, plain_optimizer)
    assert type(lit_schedule) is type(plain_schedule)
    lit_lrs, plain_lrs = [], []
    for _ in range(recipe.scheduler_args["total_steps"]):
        lit_lrs.append(lit_optimizer.param_groups[0]["lr"])
        plain_lrs.append(plain_optimizer.param_groups[0]["lr"])
        lit_schedule.step()
        plain_schedule.step()
    assert lit_lrs == plain_lrs
    assert max(lit_lrs) == pytest.approx(recipe.scheduler_args["max_lr"])


def test_the_recipe_length_follows_the_budget(recipe):
    """OneCycleLR's total_steps is the run's length: rescaled with the epochs and the training set."""
    assert recipe.scheduler_args["total_steps"] == recipe.epochs * math.ceil(50_000 / recipe.batch_size)
    smoke = recipe.for_budget(2, 1000)
    assert (smoke.epochs, smoke.scheduler_args["total_steps"]) == (2, 2 * math.ceil(1000 / recipe.batch_size))
    assert recipe.scheduler_args["total_steps"] != smoke.scheduler_args["total_steps"]  # the original is untouched


def test_torchdistill_config_expresses_the_recipe(recipe, tmp_path):
    class TagsAsMappings(yaml.SafeLoader):
        pass

    # torchdistill's constructors (!import_call, !import_get) are read back as the mappings they hold.
    TagsAsMappings.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_mapping(node, deep=True))
    text, notes = torchdistill_config(recipe, tmp_path, workers=1)
    config = yaml.load(text, Loader=TagsAsMappings)
    train = config["train"]
    kd = train["criterion"]["kwargs"]["sub_terms"]["kd"]["criterion"]
    assert kd["key"] == "KDLoss"
    assert (kd["kwargs"]["temperature"], kd["kwargs"]["alpha"], kd["kwargs"]["beta"], kd["kwargs"]["label_smoothing"]) \
        == (recipe.temperature, recipe.ce_weight, recipe.kd_weight, recipe.label_smoothing)
    assert train["optimizer"] == {"key": recipe.optimizer.rsplit(".", 1)[-1], "kwargs": recipe.optimizer_args}
    assert train["scheduler"]["key"] == recipe.scheduler.rsplit(".", 1)[-1]
    assert train["scheduler"]["kwargs"] == recipe.scheduler_args
    assert train["scheduler"]["scheduling_step"] == (1 if recipe.scheduler_interval == "step" else 0)
    assert train["num_epochs"] == recipe.epochs
    assert train["train_data_loader"]["kwargs"]["batch_size"] == recipe.batch_size
    assert train["val_data_loader"]["kwargs"]["batch_size"] == recipe.eval_batch_size
    assert train["teacher"]["requires_grad"] is False
    models = config["models"]
    assert models["teacher_model"]["kwargs"]["checkpoint"] == recipe.teacher["checkpoint"]
    assert models["teacher_model"]["kwargs"]["eval_mode"] is True
    transforms = config["datasets"]["cifar10/train"]["init"]["kwargs"]["transform"]["init"]["kwargs"]["transforms"]
    by_key = {t["key"].rsplit(".", 1)[-1]: t["init"]["kwargs"] for t in transforms}
    assert by_key["RandomCrop"] == {"size": 32, "padding": recipe.crop_padding}
    assert by_key["Normalize"] == {"mean": list(recipe.mean), "std": list(recipe.std)}
    assert any("eval mode" in note for note in notes)
    assert any("no torchdistill config key" in note for note in notes) == bool(recipe.channels_last or recipe.compile)


def test_batched_crop_flip_copies_shifted_windows():
    """Without padding the crop is the image itself, possibly mirrored; with padding, a window of the padded image."""
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip(images, 0, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    same, mirrored = (out == images).flatten(1).all(1), (out == images.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64
    shifted = crop_flip(images, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(8):
        windows = [padded[i, :, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(shifted[i], w) or torch.equal(shifted[i], w.flip(-1)) for w in windows)


def test_step_benchmark_alternates_timed_segments(tmp_path):
    """recipe_step_time's callback: lit_kd's steps in rounds of `segment`, each followed by `segment` plain
    steps that are not counted in lit_kd's intervals; warm-up steps of both untimed."""
    import time as clock

    from benchmarks.recipe_step_time import Interleave
    from lit_kd import KD, ModelSpec
    from tests.helpers import digits, tiny_trainer

    class SlowPlain:  # the plain loop's interface; each step sleeps long enough to show if it leaked into lit_kd's
        recipe = type("R", (), {"batch_size": 4})()
        calls = 0

        def epoch_order(self):
            return torch.arange(10)

        def step(self, index):
            assert len(index) == 4
            SlowPlain.calls += 1
            clock.sleep(0.5)

    interleave = Interleave(SlowPlain(), segment=3, warmup=2)
    trainer = tiny_trainer(tmp_path, limit_train_batches=2 + 1 + 2 * 3, limit_val_batches=0, callbacks=[interleave])
    trainer.fit(KD(ModelSpec("resnet8", num_classes=10), ModelSpec("resnet8", num_classes=10)), datamodule=digits())
    assert [len(r) for r in interleave.lit] == [3, 3, 1] and [len(r) for r in interleave.plain_times] == [3, 3]
    assert SlowPlain.calls == 2 + 2 * 3
    assert min(t for r in interleave.plain_times for t in r) >= 0.5
    # A leaked plain segment would add 3 x 0.5 s to one of lit_kd's intervals.
    assert max(t for r in interleave.lit for t in r) < 1.5


def test_speed_switches_times_one_variant_of_the_recipes_networks(capsys):
    """The speed-switch benchmark's per-variant run: the config's networks in the variant's memory format."""
    import json

    from benchmarks.speed_switches import main as speed_switches

    speed_switches(["--one", "channels_last", "--batch", "4", "--steps", "1", "--threads", "1"])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(row) == {"warmup_s", "step_ms", "teacher_ms"} and all(v > 0 for v in row.values())


def test_a_rebuilt_report_keeps_the_runs_machine_record(tmp_path):
    """--report-only dates its report by the first report written beside the runs, not by the rebuild."""
    import json
    import os

    from benchmarks.time_to_accuracy import earliest_machine_record

    assert earliest_machine_record(tmp_path) is None
    (tmp_path / "time_to_accuracy.json").write_text(json.dumps({"machine": {"date": "run"}}))
    (tmp_path / "rebuilt.json").write_text(json.dumps({"machine": {"date": "rebuild"}}))
    (tmp_path / "record.json").write_text(json.dumps({"runner": "plain"}))
    os.utime(tmp_path / "time_to_accuracy.json", (1, 1))
    assert earliest_machine_record(tmp_path) == {"date": "run"}


def test_interleaved_runners_take_turns_one_at_a_time(tmp_path):
    """run_interleaved: start-ups one after another, then one epoch per runner per round, never two
    runners working at once; a runner that fails mid-run is reported and the others go on; the time a
    runner waits comes back from hand_back (its clocks take it off)."""
    import threading
    import time

    from benchmarks._time_to_accuracy_common import RunRecord, Turns
    from benchmarks.time_to_accuracy import run_interleaved

    log: list[tuple[str, str]] = []
    active: list[str] = []
    waits: dict[str, list[float]] = {}
    lock = threading.Lock()

    def work(name: str, what: str) -> None:
        with lock:
            active.append(name)
            assert len(active) == 1, f"{active} worked at once"
        time.sleep(0.02)
        log.append((name, what))
        with lock:
            active.remove(name)

    def runner(name: str, epochs: int, fail_at: int | None = None):
        def job(env: dict[str, str]) -> RunRecord:
            turns = Turns(env[Turns.FOLDER_ENV], env[Turns.NAME_ENV], poll_s=0.005)
            assert turns.name == name
            work(name, "start-up")
            waits[name] = [turns.hand_back()]
            for epoch in range(epochs):
                if epoch == fail_at:
                    raise RuntimeError("out of memory")
                work(name, f"epoch {epoch}")
                waits[name].append(turns.hand_back())
            return RunRecord(runner=name)
        return job

    records = run_interleaved({"a": runner("a", 3), "b": runner("b", 2), "c": runner("c", 3, fail_at=1)},
                              tmp_path / "turns")
    assert log == [("a", "start-up"), ("b", "start-up"), ("c", "start-up"),
                   ("a", "epoch 0"), ("b", "epoch 0"), ("c", "epoch 0"),
                   ("a", "epoch 1"), ("b", "epoch 1"),
                   ("a", "epoch 2")]
    assert records["a"].failed is None and records["b"].failed is None
    assert records["c"].failed == "RuntimeError: out of memory"
    assert min(waits["a"][:2]) >= 0.03  # a waited while b and c started up / trained


def test_lit_kd_clock_takes_the_waits_for_its_turns_off_its_clock(tmp_path, monkeypatch):
    """TrainingClock under --interleave: it waits for its turn after start-up and after every validation,
    and neither the training time nor the wall time of the next epochs counts those waits."""
    import json
    import threading
    import time
    from types import SimpleNamespace

    from benchmarks._time_to_accuracy_common import Turns
    from benchmarks.time_to_accuracy import TrainingClock

    orchestrator = Turns(tmp_path, Turns.ORCHESTRATOR, poll_s=0.005)
    for key, value in orchestrator.env("lit_kd").items():
        monkeypatch.setenv(key, value)
    stop = threading.Event()

    def give_turns_slowly() -> None:  # the other runners' epochs: 0.3 s each time lit_kd hands back
        while not stop.is_set():
            if orchestrator.holder() in ("", Turns.ORCHESTRATOR):
                time.sleep(0.3)
                orchestrator.give("lit_kd")
            time.sleep(0.005)

    other_runners = threading.Thread(target=give_turns_slowly, daemon=True)
    other_runners.start()
    clock = TrainingClock(str(tmp_path / "clock.json"))
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, callback_metrics={"test/acc": torch.tensor(0.5)})
    try:
        begun = time.perf_counter()
        clock.on_train_start(trainer, None)
        assert time.perf_counter() - begun >= 0.3  # waited for its first turn
        for epoch in range(2):
            trainer.current_epoch = epoch
            clock.on_validation_start(trainer, None)
            clock.on_validation_end(trainer, None)  # hands back, waits 0.3 s
    finally:
        stop.set()
    history = json.loads((tmp_path / "clock.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[1]["train_s"] < 0.1 and history[1]["wall_s"] < 0.2  # the 0.3-s wait is on neither clock


def test_plain_and_torchdistill_clocks_take_the_waits_for_their_turns_off(tmp_path):
    """Budget + RunRecord.add_evaluation (the plain loop's and torchdistill's bookkeeping) under
    --interleave: the clock starts with the first turn and every later wait is off it."""
    import threading
    import time

    from benchmarks._time_to_accuracy_common import Budget, RunRecord, Turns

    orchestrator = Turns(tmp_path, Turns.ORCHESTRATOR, poll_s=0.005)
    stop = threading.Event()

    def give_turns_slowly() -> None:
        while not stop.is_set():
            if orchestrator.holder() in ("", Turns.ORCHESTRATOR):
                time.sleep(0.3)
                orchestrator.give("plain")
            time.sleep(0.005)

    threading.Thread(target=give_turns_slowly, daemon=True).start()
    record = RunRecord(runner="plain")
    try:
        begun = time.perf_counter()
        budget = Budget(None, Turns(tmp_path, "plain", poll_s=0.005))
        assert time.perf_counter() - begun >= 0.3  # waited for its first turn
        for epoch in range(2):
            record.add_evaluation(epoch, 100 * (epoch + 1), budget, evaluate=lambda: 0.5, out=tmp_path / "r.json")
    finally:
        stop.set()
    assert [h.epoch for h in record.history] == [0, 1]
    assert all(h.train_s < 0.1 and h.wall_s < 0.2 for h in record.history)  # no 0.3-s wait on either clock
