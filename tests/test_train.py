import json
import subprocess
import sys

import pytest
import torch

from attention import AttentionError
from attention.build import resolve_config
from attention.config import Config, with_overrides
from attention.evaluate import evaluate_run
from attention.runs import CHECKPOINT, CONFIG, METRICS, RESULT, WEIGHTS, read_metrics
from attention.train import fit

SMOKE = {
    "data.train_limit": 512,
    "train.batch_size": 128,
    "train.epochs": 3,
    "model.num_glimpses": 3,
    "train.eval_batch_size": 2000,
}


def smoke(**overrides) -> Config:
    return with_overrides(Config(), {**SMOKE, **overrides})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("train.optimizer", "lbfgs", "unknown train.optimizer"),
        ("train.schedule", "exp", "unknown train.schedule"),
        ("train.learning_rate", 0.0, "learning_rate"),
        ("train.epochs", 0, "epochs"),
        ("train.batch_size", 0, "batch_size"),
        ("data.task", "cifar", "unknown task"),
    ],
)
def test_impossible_training_configurations_are_refused_before_training(key, value, message):
    with pytest.raises(AttentionError, match=message):
        resolve_config(with_overrides(Config(), {key: value}))


@pytest.mark.mnist
def test_run_directory_holds_config_metrics_checkpoint_weights_and_result(mnist_dir, tmp_path):
    result = fit(smoke(), run_dir=tmp_path / "run", data_dir=mnist_dir, progress=False)
    run = tmp_path / "run"
    for name in (CONFIG, METRICS, CHECKPOINT, WEIGHTS, RESULT):
        assert (run / name).is_file()
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert {"train_loss", "train_error_pct", "val_error_pct", "mean_reward", "seconds"} <= set(metrics[0])
    assert result["n_test"] == 10000 and result["epochs_run"] == 3
    # weights load without unpickling arbitrary objects and re-derive the same test errors
    torch.load(run / WEIGHTS, weights_only=True)
    torch.load(run / CHECKPOINT, weights_only=True)
    again = evaluate_run(run, data_dir=mnist_dir)
    assert again["test_error_pct"] == result["test_error_pct"]
    assert again["test_error_sampled_pct"] == result["test_error_sampled_pct"]


@pytest.mark.mnist
def test_training_learns_on_a_small_mnist_subset(mnist_dir, tmp_path):
    config = smoke(
        **{
            "data.train_limit": 4000,
            "train.epochs": 4,
            "model.num_glimpses": 4,
            "model.where.initial": "center",
            "model.reader.num_scales": 2,
        }
    )
    fit(config, run_dir=tmp_path / "run", data_dir=mnist_dir, progress=False)
    errors = [m["val_error_pct"] for m in read_metrics(tmp_path / "run")]
    assert errors[-1] < 40 and errors[-1] < errors[0]


@pytest.mark.mnist
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(mnist_dir, tmp_path):
    config = smoke()
    fit(config, run_dir=tmp_path / "whole", data_dir=mnist_dir, progress=False)
    partial = fit(config, run_dir=tmp_path / "split", data_dir=mnist_dir, progress=False, stop_after_epochs=1)
    assert partial["interrupted_after_epoch"] == 1
    with pytest.raises(AttentionError, match="--resume"):
        fit(config, run_dir=tmp_path / "split", data_dir=mnist_dir, progress=False)
    fit(config, run_dir=tmp_path / "split", data_dir=mnist_dir, progress=False, resume=True)
    whole = torch.load(tmp_path / "whole" / WEIGHTS, weights_only=True)
    split = torch.load(tmp_path / "split" / WEIGHTS, weights_only=True)
    for key in whole:
        assert torch.equal(whole[key], split[key]), key

    def strip(rows):  # wall-clock fields differ between any two runs
        return [{k: v for k, v in r.items() if "second" not in k and "per_s" not in k} for r in rows]

    assert strip(read_metrics(tmp_path / "whole")) == strip(read_metrics(tmp_path / "split"))


@pytest.mark.mnist
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch):
    import attention.tasks.classify as classify_module

    real_hybrid = classify_module.hybrid
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real_hybrid(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 4:  # 512 images / 128 = 4 steps: the second epoch goes bad
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(classify_module, "hybrid", poisoned)
    with pytest.raises(AttentionError, match="loss became nan in epoch 2.*epoch 1"):
        fit(smoke(), run_dir=tmp_path / "run", data_dir=mnist_dir, progress=False)
    saved = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert saved["state"]["epoch"] == 1
    assert not (tmp_path / "run" / RESULT).exists()


@pytest.mark.mnist
def test_cli_train_then_eval_json(mnist_dir, tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "attention.cli",
        "train",
        "--task",
        "mnist",
        "--run-dir",
        str(run),
        "--data-dir",
        str(mnist_dir),
        "--no-progress",
        "--set",
        "data.train_limit=256",
        "--set",
        "train.epochs=1",
        "--set",
        "model.reader.patch_size=6",
        "--set",
        "model.reader.num_scales=3",
        "--set",
        "model.num_glimpses=2",
        "--figure",
        str(tmp_path / "paths.png"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "test error" in done.stdout
    assert (tmp_path / "paths.png").stat().st_size > 10_000
    shown = subprocess.run(
        [sys.executable, "-m", "attention.cli", "eval", str(run), "--json", "--data-dir", str(mnist_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(shown.stdout)
    assert result["task"] == "mnist" and result["n_test"] == 10000
    assert result["test_error_pct"] == json.loads((run / RESULT).read_text())["test_error_pct"]
    assert "test_error_sampled_pct" in result
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention.cli",
            "eval",
            str(run),
            "--json",
            "--test-seed",
            "5",
            "--data-dir",
            str(mnist_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(other.stdout)["protocol"]["test_seed"] == 5


def test_eval_check_says_which_runs_re_derive_their_recorded_numbers(mnist_dir, tmp_path):
    """``attention eval RUN... --check``: a line per run (same, differs with the numbers, unfinished), the
    machine it checked on, and a non-zero exit with one line when any run differs."""
    import shutil

    overrides = {"data.train_limit": 256, "data.eval_limit": 500, "train.epochs": 1, "model.num_glimpses": 2}
    same = tmp_path / "same"
    fit(with_overrides(Config(), overrides), run_dir=same, data_dir=mnist_dir, progress=False)
    tampered, unfinished = tmp_path / "tampered", tmp_path / "unfinished"
    shutil.copytree(same, tampered)
    recorded = json.loads((tampered / RESULT).read_text())
    recorded["test_error_sampled_pct"] += 1.0
    (tampered / RESULT).write_text(json.dumps(recorded))
    unfinished.mkdir()
    weightless = tmp_path / "weightless"  # committed without its model.pt, as a sweep's runs are
    shutil.copytree(same, weightless)
    (weightless / WEIGHTS).unlink()
    misfit = tmp_path / "misfit"  # weights of another shape than its config's model
    shutil.copytree(same, misfit)
    config = json.loads((misfit / CONFIG).read_text())
    config["model"]["core"]["hidden_size"] = 32
    (misfit / CONFIG).write_text(json.dumps(config))
    command = [sys.executable, "-m", "attention.cli", "eval", "--data-dir", str(mnist_dir), "--device", "cpu"]
    done = subprocess.run(
        [*command, str(same), str(tampered), str(unfinished), str(weightless), str(misfit), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    assert lines[0] == f"{same}: same"
    assert lines[1].startswith(f"{tampered}: differs: test_error_sampled_pct ")
    assert f"(recorded {recorded['test_error_sampled_pct']})" in lines[1] and "test_error_pct" not in lines[1]
    assert lines[2] == f"{unfinished}: unfinished"
    assert lines[3] == f"{weightless}: no weights"
    assert lines[4].startswith(f"{misfit}: error: the weights in ") and "another version" in lines[4]
    assert lines[5].startswith(
        "1 same, 1 differ, 1 could not be evaluated, 1 without weights and 1 unfinished (skipped); "
        "checked with "
    )
    assert done.stderr.strip().count("\n") == 0 and "1 run(s) re-evaluate to other numbers" in done.stderr
    as_json = subprocess.run(
        [*command, str(same), "--check", "--json"], capture_output=True, text=True, check=True
    )
    checked, summary = (json.loads(line) for line in as_json.stdout.splitlines())
    assert checked["state"] == "same" and checked["differences"] == {} and summary["checked"]["same"] == 1
    refused = subprocess.run(
        [*command, str(same), "--check", "--test-seed", "3"], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "drop --test-seed" in refused.stderr


def test_cli_refuses_bad_overrides_in_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention.cli",
            "train",
            "--set",
            "model.reader.patc=3",
            "--runs-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown config key 'model.reader.patc'")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def fit_hearing_epochs(config: Config, run_dir, mnist_dir) -> tuple[dict, list[tuple[int, bool]]]:
    """fit's result, and (epoch, final) as its on_epoch callback heard them."""
    reported: list[tuple[int, bool]] = []
    result = fit(
        config,
        run_dir=run_dir,
        data_dir=mnist_dir,
        progress=False,
        on_epoch=lambda row, final: reported.append((row["epoch"], final)),
    )
    return result, reported


@pytest.mark.mnist
def test_early_stopping_ends_a_run_that_stops_improving(mnist_dir, tmp_path):
    config = smoke(
        **{
            "train.learning_rate": 1e-12,
            "train.early_stopping_patience": 1,
            "train.epochs": 5,
            "data.train_limit": 256,
        }
    )
    result, reported = fit_hearing_epochs(config, tmp_path / "run", mnist_dir)
    assert result["stopped_because"] == "early_stopping" and result["epochs_run"] == 2
    assert reported == [(1, False), (2, True)]  # the callback hears that the rule ended the run


@pytest.mark.mnist
def test_time_budget_ends_a_run_between_epochs(mnist_dir, tmp_path):
    config = smoke(**{"train.time_budget_s": 1e-3, "data.train_limit": 256})
    result, reported = fit_hearing_epochs(config, tmp_path / "run", mnist_dir)
    assert result["stopped_because"] == "time_budget" and result["epochs_run"] == 1
    assert reported == [(1, True)]


@pytest.mark.mnist
def test_a_run_another_process_is_training_is_refused_and_left_untouched(mnist_dir, tmp_path):
    from attention.runs import RunBusy, holding_run

    run = tmp_path / "run"
    run.mkdir()
    with holding_run(run):  # as another process training it would (flock conflicts across open files)
        with pytest.raises(RunBusy, match="being trained by another process"):
            fit(smoke(), run_dir=run, data_dir=mnist_dir, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    # once it is free the same call trains it
    quick = smoke(**{"train.epochs": 1, "data.eval_limit": 200})
    assert fit(quick, run_dir=run, data_dir=mnist_dir, progress=False)["epochs_run"] == 1


@pytest.mark.mnist
def test_a_waiting_fit_waits_for_a_run_another_process_trains_and_takes_its_result(mnist_dir, tmp_path):
    import logging
    import threading

    from attention.config import to_dict
    from attention.runs import holding_run, write_json

    config, run = resolve_config(smoke()), tmp_path / "run"
    run.mkdir()
    write_json(run / CONFIG, to_dict(config))
    holding, waited = threading.Event(), threading.Event()

    class HearWaiting(logging.Handler):  # the other process finishes only once fit is waiting for it
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("waiting for"):
                waited.set()

    def other_process() -> None:
        with holding_run(run):
            holding.set()
            waited.wait(timeout=60)
            write_json(run / RESULT, {"trained_by": "the other process"})

    hear = HearWaiting()
    logging.getLogger("attention.runs").addHandler(hear)
    try:
        other = threading.Thread(target=other_process)
        other.start()
        holding.wait(timeout=30)
        result = fit(config, run_dir=run, data_dir=mnist_dir, progress=False, wait_if_busy=True)
        other.join()
    finally:
        logging.getLogger("attention.runs").removeHandler(hear)
    assert waited.is_set()  # it did wait (not merely arrive after the other had finished)
    assert result == {"trained_by": "the other process"}
    assert not (run / CHECKPOINT).exists()  # nothing trained twice


@pytest.mark.mnist
def test_a_run_ended_by_an_error_lets_go_of_its_directory(mnist_dir, tmp_path):
    from attention.runs import run_is_busy

    def stop(row: dict, final: bool) -> None:
        assert run_is_busy(tmp_path / "run")  # held while it trains
        raise RuntimeError("stopped by the caller")

    quick = smoke(**{"train.epochs": 2, "data.eval_limit": 200})
    with pytest.raises(RuntimeError, match="stopped by the caller"):
        fit(quick, run_dir=tmp_path / "run", data_dir=mnist_dir, progress=False, on_epoch=stop)
    assert not run_is_busy(tmp_path / "run")


def test_a_file_system_that_refuses_the_probes_lock_counts_the_run_as_free(tmp_path, monkeypatch):
    import errno
    import fcntl

    from attention.runs import LOCK, run_is_busy

    (tmp_path / LOCK).touch()

    def refuse(handle, operation):  # NFS refuses an exclusive flock on a file opened for reading
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", refuse)
    assert run_is_busy(tmp_path) is False


def test_impossible_model_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(AttentionError, match="num_glimpses"):
        fit(smoke(**{"model.num_glimpses": 0}), run_dir=tmp_path / "run", data_dir=tmp_path / "no-data")
    assert not (tmp_path / "run").exists()


def test_a_run_made_before_a_config_field_existed_is_still_found(tmp_path):
    from attention.config import config_hash, to_dict
    from attention.runs import find_run, write_json

    config = resolve_config(with_overrides(Config(), {"train.epochs": 7}))
    old = to_dict(config)
    del old["train"]["compile"]  # as written by a version without that field
    (tmp_path / "0ldhash").mkdir()
    write_json(tmp_path / "0ldhash" / "config.json", old)
    assert config_hash(config) != "0ldhash"
    assert find_run(config, tmp_path) == tmp_path / "0ldhash"
    with pytest.raises(AttentionError, match="no run of this configuration"):
        find_run(with_overrides(config, {"train.epochs": 8}), tmp_path)


def test_lifting_a_time_cap_keeps_the_runs_it_did_not_cut_and_only_those(tmp_path):
    from attention.config import config_hash, to_dict
    from attention.runs import find_run, finished_result, write_json

    capped = resolve_config(with_overrides(Config(), {"train.epochs": 7, "train.time_budget_s": 5000}))

    def finished_run(name: str, stopped_because: str, config: Config = capped, epochs_run: int = 7):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / CONFIG, to_dict(config))
        result = {"stopped_because": stopped_because, "epochs_run": epochs_run, "epochs_budget": 7}
        write_json(tmp_path / name / RESULT, {**result, "test_error_pct": 1.0})

    finished_run("ran-all-its-epochs", "epochs")
    uncapped = with_overrides(capped, {"train.time_budget_s": None})
    assert find_run(uncapped, tmp_path) == tmp_path / "ran-all-its-epochs"
    assert find_run(with_overrides(capped, {"train.time_budget_s": 6000}), tmp_path) is not None
    assert finished_result(tmp_path / "ran-all-its-epochs", uncapped, resume=False)["test_error_pct"] == 1.0
    # a tighter cap might have cut it; a run of other epochs is another run
    assert find_run(with_overrides(capped, {"train.time_budget_s": 4000}), tmp_path, missing_ok=True) is None
    assert find_run(with_overrides(uncapped, {"train.epochs": 8}), tmp_path, missing_ok=True) is None
    with pytest.raises(AttentionError, match="another configuration"):
        finished_result(
            tmp_path / "ran-all-its-epochs", with_overrides(uncapped, {"train.seed": 1}), resume=False
        )

    # a run its cap cut short, or one not finished yet, is not the uncapped run
    other_seed = with_overrides(capped, {"train.seed": 2})
    finished_run("cut-by-its-cap", "time_budget", other_seed, epochs_run=5)
    assert (
        find_run(with_overrides(other_seed, {"train.time_budget_s": None}), tmp_path, missing_ok=True) is None
    )
    # a cap that fired after the last epoch cut nothing
    last_epoch = with_overrides(capped, {"train.seed": 4})
    finished_run("cap-fired-after-its-last-epoch", "time_budget", last_epoch)
    found = find_run(with_overrides(last_epoch, {"train.time_budget_s": None}), tmp_path)
    assert found == tmp_path / "cap-fired-after-its-last-epoch"
    # a finished run the cap did not cut comes before an unfinished one of the uncapped identity
    (tmp_path / config_hash(uncapped)).mkdir()
    write_json(tmp_path / config_hash(uncapped) / CONFIG, to_dict(resolve_config(uncapped)))
    assert find_run(uncapped, tmp_path) == tmp_path / "ran-all-its-epochs"
    (tmp_path / "unfinished").mkdir()
    write_json(tmp_path / "unfinished" / CONFIG, to_dict(with_overrides(capped, {"train.seed": 3})))
    unfinished_uncapped = with_overrides(capped, {"train.seed": 3, "train.time_budget_s": None})
    assert find_run(unfinished_uncapped, tmp_path, missing_ok=True) is None
    with pytest.raises(AttentionError, match="another configuration"):
        finished_result(tmp_path / "unfinished", unfinished_uncapped, resume=True)
    # a result that does not say how its run ended cannot stand for another config (and does not crash)
    unknown = with_overrides(capped, {"train.seed": 5})
    (tmp_path / "unknown-ending").mkdir()
    write_json(tmp_path / "unknown-ending" / CONFIG, to_dict(unknown))
    write_json(tmp_path / "unknown-ending" / RESULT, {"test_error_pct": 1.0})
    assert find_run(with_overrides(unknown, {"train.time_budget_s": None}), tmp_path, missing_ok=True) is None


def test_init_from_starts_a_run_from_another_runs_weights(mnist_dir, tmp_path):
    source = fit(smoke(**{"train.epochs": 1}), run_dir=tmp_path / "a", data_dir=mnist_dir, progress=False)
    assert source["init_from_sha256"] is None
    # another task and seed, same shapes: the retina's weights do not depend on the image size
    config = smoke(**{"train.epochs": 1, "train.seed": 5, "data.task": "translated", "data.canvas_size": 40})
    from attention.build import make_model
    from attention.run_records import load_initial_weights

    model = make_model(resolve_config(config), torch.device("cpu"))
    digest = load_initial_weights(model, tmp_path / "a", torch.device("cpu"))
    saved = torch.load(tmp_path / "a" / WEIGHTS, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    result = fit(
        with_overrides(config, {"train.init_from": str(tmp_path / "a")}),
        run_dir=tmp_path / "b",
        data_dir=mnist_dir,
        progress=False,
    )
    assert result["init_from_sha256"] == digest and len(digest) == 64


def test_init_from_a_model_of_other_shapes_or_nothing_is_refused_before_anything_is_written(
    mnist_dir, tmp_path
):
    fit(smoke(**{"train.epochs": 1}), run_dir=tmp_path / "a", data_dir=mnist_dir, progress=False)
    wider = smoke(**{"train.init_from": str(tmp_path / "a"), "model.core.hidden_size": 64})
    with pytest.raises(AttentionError, match="do not fit this model"):
        fit(wider, run_dir=tmp_path / "b", data_dir=mnist_dir, progress=False)
    missing = smoke(**{"train.init_from": str(tmp_path / "nowhere")})
    with pytest.raises(AttentionError, match="does not exist"):
        fit(missing, run_dir=tmp_path / "c", data_dir=mnist_dir, progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.slow
def test_compiled_unroll_of_a_soft_reader_gives_the_eager_loss_and_gradients():
    from attention.build import make_model, training_unroll
    from attention.losses import hybrid

    config = resolve_config(
        with_overrides(
            Config(),
            {
                "model.num_glimpses": 2,
                "model.reader.name": "filterbank",
                "model.reader.grid_size": 3,
                "model.where.policy": "deterministic",
                "model.glimpse.image_hidden": 8,
                "model.glimpse.location_hidden": 8,
                "model.glimpse.output_size": 16,
                "model.core.hidden_size": 16,
                "train.compile": True,
            },
        )
    )
    model = make_model(config, torch.device("cpu"))
    images = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(6)

    def loss_and_grads(unroll):
        model.zero_grad()
        loss = hybrid(unroll(images, None), labels, reinforce_weight=1.0, baseline_weight=1.0).total
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = loss_and_grads(lambda x, _generator: model.unroll(x, sample=True))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled_unroll = training_unroll(model, config)
    compiled_loss, compiled_grads = loss_and_grads(compiled_unroll)
    torch.testing.assert_close(compiled_loss, eager_loss)
    for compiled, eager in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)
    # the last batch of an epoch is smaller: the same graph serves it (dynamic batch)
    smaller = compiled_unroll(images[:4], None)
    torch.testing.assert_close(smaller.logits, model.unroll(images[:4], sample=True).logits)
    # it really was compiled, into one graph without breaks, not recompiled for the smaller batch
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_a_stochastic_model_keeps_the_eager_unroll_under_compile():
    # its sampling generator breaks a compiled graph: only the retina's sensor is compiled (make_model)
    from attention.build import make_model, training_unroll

    config = resolve_config(with_overrides(Config(), {"model.num_glimpses": 2, "train.compile": False}))
    model = make_model(config, torch.device("cpu"))
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    unroll = training_unroll(model, with_overrides(config, {"train.compile": True}))
    rollout = unroll(images, torch.Generator().manual_seed(3))
    expected = model.unroll(images, sample=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(rollout.where, expected.where)
    torch.testing.assert_close(rollout.logits, expected.logits)


def test_an_output_file_is_written_whole_into_a_new_folder_or_refused_in_one_line(tmp_path, monkeypatch):
    import os

    from attention.runs import atomic_write_bytes, check_writable

    target = tmp_path / "new" / "folder" / "out.json"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for refused in (lambda: atomic_write_bytes(blocker / "x", b"x"), lambda: check_writable(blocker / "x")):
        with pytest.raises(AttentionError, match=r"cannot write .*a-file/") as error:
            refused()
        assert "\n" not in str(error.value)
    with pytest.raises(AttentionError, match="is a directory"):
        check_writable(tmp_path / "new")
    check_writable(tmp_path / "other" / "x.json")  # makes the folder, leaves no file
    assert (tmp_path / "other").is_dir() and not any((tmp_path / "other").iterdir())

    def refuse(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(AttentionError, match="No space left on device"):
        atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"first"  # the old file stands, and no temporary is left beside it
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_bench_refuses_an_output_it_could_not_write_before_measuring(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "attention.cli", "bench", "--json", str(blocker / "bench.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot write") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.mnist
def test_weights_or_a_checkpoint_that_do_not_fit_the_run_are_refused_in_one_line(mnist_dir, tmp_path):
    run = tmp_path / "run"
    fit(smoke(), run_dir=run, data_dir=mnist_dir, progress=False, stop_after_epochs=1)
    original = torch.load(run / CHECKPOINT, weights_only=True)
    saved = torch.load(run / CHECKPOINT, weights_only=True)
    del saved["optimizer"]  # a checkpoint of an older version, or of another kind of run
    torch.save(saved, run / CHECKPOINT)
    with pytest.raises(AttentionError, match=r"cannot be resumed \(no 'optimizer'\); .*delete it") as refused:
        fit(smoke(), run_dir=run, data_dir=mnist_dir, progress=False, resume=True)
    assert "\n" not in str(refused.value)
    assert "optimizer" not in torch.load(run / CHECKPOINT, weights_only=True)  # left as it was
    saved["optimizer"], saved["model"] = {}, {"other.weight": torch.zeros(2)}
    torch.save(saved, run / CHECKPOINT)
    with pytest.raises(AttentionError, match=r"do not fit this model \(.*other\.weight"):  # names the keys
        fit(smoke(), run_dir=run, data_dir=mnist_dir, progress=False, resume=True)
    torch.save([1, 2], run / CHECKPOINT)
    with pytest.raises(AttentionError, match=r"cannot be resumed \(not a checkpoint\)"):
        fit(smoke(), run_dir=run, data_dir=mnist_dir, progress=False, resume=True)
    original["best_model"] = {name: value[:1] for name, value in original["model"].items()}
    torch.save(original, run / CHECKPOINT)  # else whole: found at restore, not when training ends
    with pytest.raises(AttentionError, match="best weights have other names or shapes"):
        fit(smoke(), run_dir=run, data_dir=mnist_dir, progress=False, resume=True)

    finished = tmp_path / "finished"
    fit(smoke(**{"train.epochs": 1}), run_dir=finished, data_dir=mnist_dir, progress=False)
    torch.save({"core.weight": torch.zeros(3, 3)}, finished / WEIGHTS)
    with pytest.raises(AttentionError, match=r"model\.pt do not fit this model \(.*\); were they written"):
        evaluate_run(finished, data_dir=mnist_dir)
