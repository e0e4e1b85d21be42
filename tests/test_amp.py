"""Mixed-precision training (--amp): which dtype each device gets, refusals, float32 checkpoints, exact resume."""

from __future__ import annotations

import pytest
import torch

from openocr_cli.data.synth import generate
from openocr_cli.errors import UserError
from openocr_cli.model import build_detector
from openocr_cli.training.builders import autocast_dtype
from openocr_cli.training.callbacks import Callback
from openocr_cli.training.run_data import load_run_data
from openocr_cli.training.settings import TrainSettings, apply_flags
from openocr_cli.training.trainer import Trainer
from tests.test_train import small_settings, train_args

CPU = torch.device("cpu")
NATIVE_BF16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has neither AVX-512 BF16 nor AMX")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth"), num_train=10, num_test=3, seed=3, size=(96, 128))


class Losses(Callback):
    """The loss of every step, in order."""

    def __init__(self):
        self.values: list[float] = []

    def on_step(self, trainer, report):
        self.values.append(report.losses["loss"])


def amp_settings(synth, out, amp, **extra) -> TrainSettings:
    base = small_settings(synth, out, **extra)
    return TrainSettings.from_config(apply_flags(base.cfg, amp=amp))


def test_amp_modes_read_from_flags_and_config(synth, tmp_path):
    assert amp_settings(synth, tmp_path, "BF16").amp == "bf16"
    assert amp_settings(synth, tmp_path, True).amp == "auto"
    assert small_settings(synth, tmp_path).amp == "off"
    legacy = small_settings(synth, tmp_path, overrides=["Global.use_amp=true"])
    assert legacy.amp == "fp16-cuda" and autocast_dtype(legacy.amp, CPU) is None  # OpenOCR: nothing on a CPU
    with pytest.raises(UserError, match="--amp is 'half'.*off, bf16, fp16, auto") as err:
        amp_settings(synth, tmp_path, "half")
    assert err.value.exit_code == 2
    with pytest.raises(UserError, match="Global.amp is 'int8'") as err:
        small_settings(synth, tmp_path, overrides=["Global.amp=int8"])
    assert err.value.exit_code == 1


def test_fp16_on_cpu_is_a_usage_error(cli, tmp_path, synth):
    code, _, err = cli(*train_args(synth, tmp_path / "run", "--amp", "fp16", "--epochs", "1"))
    assert code == 2
    flat = " ".join(err.split())
    assert "--amp fp16 cannot train on cpu" in flat and "CUDA only" in flat
    assert ("use --amp bf16" in flat) == NATIVE_BF16
    assert not (tmp_path / "run" / "latest.pth").exists()


def test_auto_and_bf16_follow_the_cpu():
    if NATIVE_BF16:
        assert autocast_dtype("auto", CPU) is torch.bfloat16 and autocast_dtype("bf16", CPU) is torch.bfloat16
    else:
        assert autocast_dtype("auto", CPU) is None  # falls back to float32 with a warning
        with pytest.raises(UserError, match="neither AVX-512 BF16 nor AMX") as err:
            autocast_dtype("bf16", CPU)
        assert err.value.exit_code == 2
    assert autocast_dtype("off", CPU) is None


@needs_bf16
def test_bf16_checkpoint_is_float32_and_loads_strict(tmp_path, synth):
    settings = amp_settings(synth, tmp_path / "run", "bf16", epochs=1)
    trainer = Trainer(settings, load_run_data(settings, skip_bad=False), CPU)
    trainer.train()
    ckpt = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert ckpt["scaler"] is None  # bf16 needs no loss scaling
    tensors = [t for t in ckpt["state_dict"].values() if t.is_floating_point()]
    tensors += [t for slots in ckpt["optimizer"]["state"].values() for t in slots.values()
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim > 0]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)
    model = build_detector(ckpt["config"]["Architecture"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    # the weights did train under autocast (they moved from the seeded initialisation)
    fresh = Trainer(amp_settings(synth, tmp_path / "other", "bf16", epochs=1), trainer.data, CPU).model.state_dict()
    assert max(float((fresh[k] - ckpt["state_dict"][k]).abs().max()) for k in fresh) > 0


@needs_bf16
def test_a_diverged_bf16_run_names_its_amp_mode_and_the_flag_that_turns_it_off(tmp_path, synth):
    settings = amp_settings(synth, tmp_path / "run", "bf16", epochs=1)
    trainer = Trainer(settings, load_run_data(settings, skip_bad=False), CPU)
    trainer.nonfinite_streak = 3
    message = trainer._diverged(7)
    assert "from 5 to 7" in message and "this run trains with --amp bf16; try --amp off" in message


@needs_bf16
def test_bf16_resume_repeats_the_uninterrupted_losses(tmp_path, synth):
    """6 bf16 steps straight == 4 steps, stop, resume, 2 more: same loss at every step, same weights."""
    straight_losses, split_losses = Losses(), Losses()
    settings = amp_settings(synth, tmp_path / "straight", "bf16")
    data = load_run_data(settings, skip_bad=False)
    straight = Trainer(settings, data, CPU, callbacks=[straight_losses])
    straight.train()
    first = Trainer(amp_settings(synth, tmp_path / "split", "bf16"), data, CPU, callbacks=[split_losses])
    first.train(stop_after=4)
    ckpt = torch.load(tmp_path / "split" / "latest.pth", weights_only=True)
    assert ckpt["config"]["Global"]["amp"] == "bf16"
    second = Trainer(TrainSettings.from_config(ckpt["config"]), data, CPU, resume=ckpt, callbacks=[split_losses])
    assert second.amp_dtype is torch.bfloat16
    second.train()
    assert len(straight_losses.values) == 6
    assert split_losses.values == pytest.approx(straight_losses.values, abs=1e-6)
    a, b = straight.model.state_dict(), second.model.state_dict()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-6


@needs_cuda
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_amp_trains_and_resumes_with_the_scaler(tmp_path, synth, amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")
    cuda = torch.device("cuda")
    settings = TrainSettings.from_config(apply_flags(amp_settings(synth, tmp_path / "run", amp).cfg, device="cuda"))
    data = load_run_data(settings, skip_bad=False)
    trainer = Trainer(settings, data, cuda)
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    trainer.train(stop_after=4)
    ckpt = torch.load(tmp_path / "run" / "latest.pth", weights_only=True)
    assert (ckpt["scaler"] is not None) == (amp == "fp16")
    assert all(t.dtype == torch.float32 for t in ckpt["state_dict"].values() if t.is_floating_point())
    resumed = Trainer(settings, data, cuda, resume=ckpt)
    if amp == "fp16":
        assert resumed.scaler.get_scale() == ckpt["scaler"]["scale"]
    resumed.train()
    assert resumed.state.global_step == 6
