"""Nothing lost, nothing wrong kept: --force only replaces run folders, non-finite weights stop the run before
they reach a checkpoint, --resume refuses what it cannot continue, checkpoints verify their data, and every
failure the CLI can meet is one line with a documented exit code."""

import errno
import json

import pytest
import torch

from spikeforge.cli import main
from spikeforge.config import TrainConfig
from spikeforge.training import TrainingDivergedError, train
from spikeforge.training import checkpoint as C
from spikeforge.training import distributed as D
from spikeforge.training.runs import RunDir

TINY = ["data.train_subset=192", "data.test_subset=96", "data.batch_size=32", "model.T=2",
        "model.kwargs.channels=[4, 8]", "run.epochs=1", "run.progress=false", "run.plots=false",
        "run.device=cpu"]


def cli(tmp_path, *extra, out="r"):
    return ["train", "--out", str(tmp_path / out)] + sum((["--set", a] for a in TINY + list(extra)), [])


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if not ln.startswith("spikeforge: warning")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One finished 1-epoch run (best and last checkpoints, one metrics record)."""
    path = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig().override(TINY), path, verbose=False)
    return path


def _copy(run, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------------------------------- --force
def test_force_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("years of work")
    assert main(cli(tmp_path, out="thesis") + ["--force"]) == 2
    one_line_error(capsys, "is not a spikeforge run folder", "left untouched")
    assert (thesis / "chapter1.tex").read_text() == "years of work"
    assert sorted(p.name for p in thesis.iterdir()) == ["chapter1.tex"]


def test_force_replaces_a_run_folder_new_and_legacy(tmp_path, trained_run):
    run = _copy(trained_run, tmp_path)
    assert RunDir.is_run_folder(run) and (run / RunDir.MARKER).is_file()
    (run / RunDir.MARKER).unlink()  # a run made before the marker existed: recognised by its run.json
    assert RunDir.is_run_folder(run)
    RunDir.create(run, force=True)
    assert sorted(p.name for p in run.iterdir()) == [RunDir.MARKER]
    # a run.json that spikeforge did not write is not a marker
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"code": "mine"}))
    assert not RunDir.is_run_folder(other)


# ------------------------------------------------------------------------------------------- non-finite
def test_infinite_lr_stops_with_exit_3_and_no_nonfinite_checkpoint(tmp_path, capsys):
    rc = main(cli(tmp_path, "optim.lr=inf", "run.checkpoint_every_steps=1"))
    assert rc == 3
    err = capsys.readouterr().err
    assert "training stopped" in err and "x_seq" not in err, err
    for name in ("last", "best"):
        if C.checkpoint_exists(tmp_path / "r" / "checkpoints" / name):
            ck = C.load_checkpoint(tmp_path / "r" / "checkpoints" / name)
            assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_huge_sgd_step_stops_before_running_stats_become_inf(tmp_path, capsys):
    rc = main(cli(tmp_path, "optim.name=sgd", "optim.lr=1e30", "run.epochs=2"))
    assert rc == 3, capsys.readouterr().err
    assert "training stopped" in capsys.readouterr().err
    for name in ("last", "best"):
        if C.checkpoint_exists(tmp_path / "r" / "checkpoints" / name):
            ck = C.load_checkpoint(tmp_path / "r" / "checkpoints" / name)
            assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class NaNGradNet(torch.nn.Module):
    """Finite loss, NaN gradient."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x):
        return _NaNGrad.apply(self.lin(x.reshape(x.shape[0], -1))).unsqueeze(0).expand(2, -1, -1)


def test_nan_gradient_with_finite_loss_stops(tmp_path):
    with pytest.raises(TrainingDivergedError, match="gradient of .lin.weight. became nan or inf at epoch 1, step 0"):
        train(TrainConfig().override(TINY), tmp_path / "r", verbose=False, model=NaNGradNet())


class LateNaNGradNet(NaNGradNet):
    """Finite gradients for the first 3 steps, NaN from then on."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.lin(x.reshape(x.shape[0], -1))
        y = _NaNGrad.apply(y) if self.calls > 3 else y
        return y.unsqueeze(0).expand(2, -1, -1)


def test_divergence_after_a_checkpoint_names_it_and_how_to_go_on(tmp_path):
    """--resume would replay the same config into the same NaN: the message names the kept checkpoint and the
    command that starts a new run from it with other settings."""
    with pytest.raises(TrainingDivergedError) as e:
        train(TrainConfig().override(TINY + ["run.checkpoint_every_steps=1"]), tmp_path / "r", verbose=False,
              model=LateNaNGradNet())
    last = tmp_path / "r" / "checkpoints" / "last.safetensors"
    assert f"epoch 1, step 3; the last good checkpoint is kept at {last}" in str(e.value)
    assert f"spikeforge train --init-from {last} --set optim.lr=" in str(e.value)
    assert C.load_checkpoint(last)["meta"]["step_in_epoch"] == 3


class OverflowNet(torch.nn.Module):
    """Finite (huge) weights whose output overflows float32 before it reaches a spiking layer."""

    def __init__(self):
        super().__init__()
        from spikeforge.neurons import LIF

        self.lin = torch.nn.Linear(64, 10)
        self.lif = LIF()
        with torch.no_grad():
            self.lin.weight.fill_(1e38)

    def forward(self, x):
        h = self.lin(x.reshape(x.shape[0], -1))
        return self.lif(h.unsqueeze(0).expand(2, -1, -1).contiguous())


def test_overflowing_activations_stop_like_divergence(tmp_path):
    """Not the misleading 'x_seq: ... pass finite input' (exit 2): the data was finite, the model overflowed."""
    with pytest.raises(TrainingDivergedError, match=r"input of a spiking layer became nan or inf \(the batch was "
                                                    r"finite: a layer's output overflowed\) at epoch 1, step 0"):
        train(TrainConfig().override(TINY), tmp_path / "r", verbose=False, model=OverflowNet())


def test_save_checkpoint_refuses_nonfinite_and_keeps_previous(tmp_path):
    net = torch.nn.Linear(2, 2)
    C.save_checkpoint(tmp_path / "last", net.state_dict(), None, {"epoch": 1})
    before = (tmp_path / "last.safetensors").read_bytes()
    with torch.no_grad():
        net.bias[1] = float("inf")
    with pytest.raises(C.NonFiniteCheckpointError, match="bias"):
        C.save_checkpoint(tmp_path / "last", net.state_dict(), None, {"epoch": 2})
    assert (tmp_path / "last.safetensors").read_bytes() == before
    assert C.nonfinite_names({"a": torch.tensor([3e38, -3e38]), "b": torch.tensor([1, 2])}) == []


# ------------------------------------------------------------------------------------------- resume
def test_resume_without_last_checkpoint_is_refused_and_keeps_everything(tmp_path, trained_run, capsys):
    run = _copy(trained_run, tmp_path)
    for suffix in (".safetensors", ".json"):
        (run / "checkpoints" / f"last{suffix}").unlink()
    metrics, best = (run / "metrics.jsonl").read_bytes(), (run / "checkpoints" / "best.safetensors").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    one_line_error(capsys, "last.safetensors is missing", "spikeforge eval")
    assert (run / "metrics.jsonl").read_bytes() == metrics
    assert (run / "checkpoints" / "best.safetensors").read_bytes() == best


def test_resume_applies_device_and_no_progress(tmp_path, trained_run, capsys):
    run = _copy(trained_run, tmp_path)
    if not torch.cuda.is_available():  # the stored config says cpu; --device must still be honoured
        assert main(["train", "--resume", str(run), "--device", "cuda", "--no-progress"]) == 2
        one_line_error(capsys, "'cuda' was asked for but CUDA is not available")
    with pytest.raises(ValueError, match="run.seed cannot change on resume"):  # run.epochs may: it extends the run
        train(TrainConfig(), run, resume=True, verbose=False, runtime={"run.seed": 5})


def test_resume_no_progress_turns_off_a_stored_progress_bar(tmp_path, trained_run, monkeypatch):
    from spikeforge.training import trainer

    run = _copy(trained_run, tmp_path)
    RunDir(run).load_config().override(["run.progress=true"]).to_yaml(run / "config.yaml")
    seen = []
    monkeypatch.setattr(trainer, "_progress_bar", lambda total, initial, desc, enabled: seen.append(enabled))
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0  # the stored config's bar again
    assert seen == [False, True]


def test_resume_keeps_metrics_after_a_corrupt_middle_line(tmp_path, trained_run, capsys):
    """Only a torn last line (a crash mid-write) is dropped; a damaged earlier line must not make --resume
    truncate every record after it."""
    run = _copy(trained_run, tmp_path)
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text('{"epoch": 0, "train_lo\x00ss"\n' + good + '{"epoch": 2, "tr')
    assert [r["epoch"] for r in RunDir(run).read_metrics(strict=False)] == [1]
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 2
    one_line_error(capsys, f"{run / 'metrics.jsonl'}: line 1 is not valid JSON")
    assert (run / "metrics.jsonl").read_bytes() == before
    (run / "metrics.jsonl").write_text(good + '{"epoch": 2, "tr')  # torn last line only: dropped, resume goes on
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert [r["epoch"] for r in RunDir(run).read_metrics()] == [1, 2]


def _rewrite_meta(path, **changes):
    """Rewrite a checkpoint's metadata fields, keeping its tensors (so the digest still matches)."""
    from safetensors.torch import save

    ck = C.load_checkpoint(path)
    meta = {**ck["meta"], **changes}
    meta = {k: v for k, v in meta.items() if v is not None}
    st = path.with_name(path.name + ".safetensors")
    st.write_bytes(save(ck["tensors"], metadata={"spikeforge": json.dumps(meta)}))


@pytest.mark.parametrize("field,value", [("epoch", -5), ("step_in_epoch", 1_000_000), ("global_step", None),
                                         ("partial", "garbled")])
def test_resume_rejects_bad_metadata_naming_the_field(tmp_path, trained_run, capsys, field, value):
    run = _copy(trained_run, tmp_path)
    _rewrite_meta(run / "checkpoints" / "last", **{field: value})
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    one_line_error(capsys, "last.safetensors", f"metadata field {field!r}")


# ------------------------------------------------------------------------------------------- integrity
def test_flipped_tensor_bytes_are_detected(tmp_path, trained_run, capsys):
    run = _copy(trained_run, tmp_path)
    st = run / "checkpoints" / "best.safetensors"
    data = bytearray(st.read_bytes())
    data[-20] ^= 0x55  # inside the last tensor's data
    st.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the SHA-256 digest"):
        C.load_checkpoint(run / "checkpoints" / "best")
    assert main(["eval", str(run)]) == 2
    one_line_error(capsys, str(st), "corrupt")


@pytest.mark.parametrize("old,new", [(b'\\"epoch\\": 1', b'\\"epoch\\": 7'),  # JSON inside the JSON header
                                     (b'tensor_sha256', b'tensor_sha257')])
def test_flipped_metadata_bytes_are_detected(tmp_path, trained_run, old, new):
    """The metadata (epoch, RNG state, the tensor digest itself) is checked too: a changed byte there is no
    silently different resume."""
    run = _copy(trained_run, tmp_path)
    st = run / "checkpoints" / "last.safetensors"
    data = st.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    st.write_bytes(data.replace(old, new))
    with pytest.raises(ValueError, match=f"^{st}: .*metadata does not match its SHA-256 digest"):
        C.load_checkpoint(run / "checkpoints" / "last")


@pytest.mark.parametrize("cut", [8, 200, -30])
def test_truncated_checkpoint_names_the_file(tmp_path, trained_run, cut):
    run = _copy(trained_run, tmp_path)
    st = run / "checkpoints" / "last.safetensors"
    st.write_bytes(st.read_bytes()[:cut])
    with pytest.raises(ValueError, match=f"{st}: .*(truncated or corrupt|metadata|digest)") as e:
        C.load_checkpoint(run / "checkpoints" / "last")
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_model_is_one_line(tmp_path, trained_run, capsys):
    run = _copy(trained_run, tmp_path)
    (run / "config.yaml").write_text(TrainConfig().override(TINY + ["model.kwargs.channels=[4, 6]"]).to_yaml())
    assert main(["eval", str(run)]) == 2
    one_line_error(capsys, "best.safetensors: checkpoint does not fit the model", "shape mismatch")


# ------------------------------------------------------------------------------------------- one-line errors
def test_yaml_syntax_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  epochs: [1, 2\n  seed: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    one_line_error(capsys, str(bad), "not valid YAML at line")
    assert not (tmp_path / "r").exists()


def test_failed_start_leaves_no_folder(tmp_path, capsys):
    assert main(cli(tmp_path, "data.name=no_such_set")) == 2
    capsys.readouterr()
    assert not (tmp_path / "r").exists()

    class Broken(torch.nn.Linear):
        def forward(self, x):
            raise ValueError("x: broken on purpose")

    with pytest.raises(ValueError, match="broken on purpose"):
        train(TrainConfig().override(TINY), tmp_path / "s", verbose=False, model=Broken(1, 1))
    assert not (tmp_path / "s").exists()  # the rerun needs no --force


def test_ctrl_c_in_the_first_epoch_keeps_a_folder_resume_can_continue(tmp_path, capsys, monkeypatch):
    """An interrupted run is not a failed start: the CLI says to --resume it, so its folder must stay."""
    from spikeforge.training import trainer

    real = trainer.lr_at

    def interrupt_at_step_2(cfg, step, steps_per_epoch):
        if step == 2:
            raise KeyboardInterrupt
        return real(cfg, step, steps_per_epoch)

    monkeypatch.setattr(trainer, "lr_at", interrupt_at_step_2)
    assert main(cli(tmp_path)) == 130
    assert "--resume" in capsys.readouterr().err
    assert RunDir.is_run_folder(tmp_path / "r")
    monkeypatch.setattr(trainer, "lr_at", real)
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0
    assert [r["epoch"] for r in RunDir(tmp_path / "r").read_metrics()] == [1]


def test_disk_full_is_one_line(tmp_path, capsys, monkeypatch):
    def full(self, name, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / name))

    monkeypatch.setattr(RunDir, "write_json", full)
    assert main(cli(tmp_path)) == 2
    one_line_error(capsys, "run.json", "No space left on device")


def test_disk_full_inside_a_write_names_the_file(tmp_path, capsys, monkeypatch):
    """A write or fsync that fails carries no file name; the error must still name the file being written."""
    import os

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            if len(data) > 10_000:  # checkpoints, not the small JSON and marker files
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(C.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    assert main(cli(tmp_path)) == 2
    line = one_line_error(capsys, "No space left on device", ".safetensors")
    assert str(tmp_path / "r" / "checkpoints") in line, line
    assert not list((tmp_path / "r" / "checkpoints").glob("*.tmp")) if (tmp_path / "r").exists() else True

    def no_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    run = RunDir.create(tmp_path / "m")
    monkeypatch.setattr("spikeforge.training.runs.os.fsync", no_fsync)
    with pytest.raises(OSError) as e:
        run.append_metrics({"epoch": 1})
    assert e.value.filename == str(run.metrics_path)


def test_read_only_folder_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    def read_only(dir, prefix, suffix):
        raise OSError(errno.EROFS, "Read-only file system", f"{dir}/{prefix}x1y2{suffix}")

    monkeypatch.setattr(C.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as e:
        TrainConfig().to_yaml(tmp_path / "config.yaml")  # atomic: resume --epochs rewrites it
    assert e.value.filename == str(tmp_path / "config.yaml") and e.value.errno == errno.EROFS


def test_plots_on_a_full_disk_name_the_file_and_keep_the_finished_run(tmp_path, capsys, monkeypatch):
    """matplotlib's write error names no file. A run whose training finished is not failed by its report: a
    warning names the plot and the command that redraws it."""
    from matplotlib.figure import Figure

    def full(self, path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    assert main(cli(tmp_path, "run.plots=true")) == 0
    err = capsys.readouterr().err
    assert f"could not write the report: {tmp_path / 'r' / 'plots'}" in err and "spikeforge report" in err, err
    assert (tmp_path / "r" / "summary.json").is_file()
    assert main(["report", str(tmp_path / "r")]) == 2
    one_line_error(capsys, str(tmp_path / "r" / "plots" / "curves.png"), "No space left on device")


def test_eval_prints_its_result_when_the_folder_is_read_only(tmp_path, trained_run, capsys, monkeypatch):
    def read_only(self, name, obj):
        raise OSError(errno.EROFS, "Read-only file system", str(self.path / name))

    monkeypatch.setattr(RunDir, "write_json", read_only)
    assert main(["eval", str(trained_run)]) == 0
    out = capsys.readouterr()
    assert "test accuracy" in out.out and "could not save" in out.err and "Read-only" in out.err


def test_divergence_inside_any_command_is_exit_3(tmp_path, trained_run, capsys, monkeypatch):
    """quantize --qat-epochs trains too: a NaN there is the documented exit status 3, one line, not a traceback."""
    from spikeforge.training import trainer

    def diverge(*args, **kwargs):
        raise TrainingDivergedError("training stopped: the loss became nan at epoch 1, step 0")

    monkeypatch.setattr(trainer, "train", diverge)
    assert main(["quantize", str(trained_run), "--bits", "4", "--qat-epochs", "1", "--out", str(tmp_path / "q")]) == 3
    one_line_error(capsys, "spikeforge quantize: training stopped: the loss became nan")


def test_output_cut_by_a_pipe_is_not_an_error():
    """`spikeforge datasets | head -1`: the reader leaving early is not an error (it printed 'Broken pipe')."""
    import subprocess
    import sys

    code = ("import sys; import spikeforge.data.cli as d; from spikeforge.cli import main\n"
            "d.run = lambda args: [print('x' * 99) for _ in range(20000)] and 0  # 2 MB: more than a pipe holds\n"
            "sys.exit(main(['datasets']))")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()  # the reader goes away while the command still prints
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and err == "", err


# ------------------------------------------------------------------------------------------- BN, DDP
def test_warns_when_bn_statistics_come_from_few_batches(capsys):
    from spikeforge.training.trainer import BN_MIN_BATCHES, warn_few_bn_batches

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net.train()
    for _ in range(3):
        net(torch.randn(4, 2))
    assert warn_few_bn_batches(net)
    assert "BatchNorm running statistics from only 3 training batches" in capsys.readouterr().err
    net[1].num_batches_tracked.fill_(BN_MIN_BATCHES)
    assert not warn_few_bn_batches(net) and capsys.readouterr().err == ""


def test_last_batch_rule_is_the_same_for_any_process_count():
    assert [len(b) for b in D.batches(97, 16, 0, 0)] == [16] * 6 + [1]
    assert [len(b) for b in D.batches(97, 16, 0, 0, drop_last=True)] == [16] * 6
    D.check_last_batch(97, 16, 1, drop_last=False)
    D.check_last_batch(97, 16, 2, drop_last=True)
    D.check_last_batch(98, 16, 2, drop_last=False)
    with pytest.raises(ValueError, match="last batch of each epoch holds 1 of the 97 .* set data.drop_last=true"):
        D.check_last_batch(97, 16, 2, drop_last=False)


def test_dist_timeout_reaches_the_process_group(monkeypatch):
    import datetime

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kw: seen.update(kw))
    D.init_distributed("cpu", timeout_s=42)
    assert seen["timeout"] == datetime.timedelta(seconds=42) and seen["backend"] == "gloo"
    assert TrainConfig().run.dist_timeout_s == 600
    with pytest.raises(ValueError, match="run.dist_timeout_s"):
        TrainConfig().override(["run.dist_timeout_s=0"])


def test_huge_but_finite_weights_are_not_divergence():
    """The fused L2 norms overflow float32 for weights near 1e20; the exact re-check must let them pass."""
    from spikeforge.training.trainer import _check_finite, _norms

    net = torch.nn.Linear(4, 4)
    with torch.no_grad():
        net.weight.fill_(1e25)
    norms = _norms(list(net.parameters()), torch.device("cpu"))
    assert not torch.isfinite(norms).all()  # the fast check flags it ...
    _check_finite(torch.zeros(0), list(net.parameters()), D.DistContext(), RunDir("x"), 1, 0, True, net)  # ... and passes
    with torch.no_grad():
        net.bias[0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="parameter or buffer 'bias' after the optimiser step"):
        _check_finite(torch.zeros(0), list(net.parameters()), D.DistContext(), RunDir("x"), 1, 0, True, net)


@pytest.mark.parametrize("setting,needle", [
    ("model.neuron_kwargs.v_threshold=-1", "model.neuron_kwargs.v_threshold: got -1; allowed: > 0.0"),
    ("model.kwargs.hidden=-3", "model.kwargs: model 'convnet' cannot be built with "),
])
def test_model_and_neuron_values_out_of_range_name_the_config_key(tmp_path, capsys, setting, needle):
    assert main(cli(tmp_path, setting)) == 2
    one_line_error(capsys, needle, setting.split(".")[-1].split("=")[0])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("key", ["T", "neuron", "num_classes"])
def test_model_kwargs_cannot_set_what_the_config_sets(tmp_path, capsys, key):
    assert main(cli(tmp_path, f"model.kwargs.{key}=8")) == 2
    one_line_error(capsys, f"model.kwargs.{key}: set by")
    assert not (tmp_path / "r").exists()
