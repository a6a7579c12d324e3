"""Training on the GPU end to end: the CUDA twin of every kernel a model uses, the dispatch by
device, Module.to / Tensor.to, optimisers, checkpoints and ``edu-seg train --device cuda``.

Runs on the emulated GPU everywhere (tests/cuda_emulation) and on a real one where CuPy finds
it (the ``gpu`` fixture). The CPU run is the oracle: same seed, same data, same steps.
"""
import numpy as np
import pytest

from edu_seg import cli, models
from edu_seg.checkpoint import load_checkpoint
from edu_seg.data import Shapes
from edu_seg.train import TrainConfig, Trainer, evaluate, predict_probabilities, seed_everything

TINY_UNET = {"depth": 1, "base_width": 4}


def _train(device, name="unet", config=TINY_UNET, optimizer="adam", steps=3, out_dir=None):
    seed_everything(0)
    model = models.create(name, num_classes=4, **config).to(device)
    data = Shapes(16, size=32, num_classes=4, seed=0)
    val = Shapes(8, size=32, num_classes=4, seed=1)
    trainer = Trainer(model, data, val, TrainConfig(steps=steps, batch_size=8, lr=1e-2,
                                                    optimizer=optimizer, progress=False,
                                                    verbose=False), out_dir=out_dir)
    trainer.fit()
    return model, trainer, val


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_unet_trains_the_same_on_the_gpu(gpu, optimizer):
    cpu_model, cpu_trainer, val = _train("cpu", optimizer=optimizer)
    gpu_model, gpu_trainer, _ = _train("cuda", optimizer=optimizer)
    assert gpu_model.device == "cuda"
    assert all(type(p.data) is gpu.cupy.ndarray for p in gpu_model.parameters())
    for a, b in zip(cpu_trainer.history, gpu_trainer.history):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-4)
        np.testing.assert_allclose(a["val_miou"], b["val_miou"], atol=1e-3)
    for (name, a), b in zip(cpu_model.state_dict().items(), gpu_model.state_dict().values()):
        np.testing.assert_allclose(a, b.get(), rtol=1e-3, atol=1e-4, err_msg=name)
    images = np.stack([val[i]["image"] for i in range(2)])
    np.testing.assert_allclose(predict_probabilities(cpu_model, images),
                               predict_probabilities(gpu_model, images), atol=1e-4)
    assert evaluate(gpu_model, val)["miou"] == pytest.approx(evaluate(cpu_model, val)["miou"],
                                                             abs=1e-3)


@pytest.mark.parametrize("name, config", [
    ("deeplabv3plus", {}),                     # separable convs, ASPP with image pooling, BN
    ("pspnet", {}),                            # adaptive pooling pyramid, auxiliary loss
])
def test_models_with_more_kernels_train_on_the_gpu(gpu, name, config):
    cpu_model, cpu_trainer, _ = _train("cpu", name, config, steps=1)
    gpu_model, gpu_trainer, _ = _train("cuda", name, config, steps=1)
    np.testing.assert_allclose(cpu_trainer.history[0]["train_loss"],
                               gpu_trainer.history[0]["train_loss"], rtol=1e-4)


def _tiny_trainer(device):
    seed_everything(0)
    model = models.create("unet", num_classes=4, **TINY_UNET).to(device)
    return Trainer(model, Shapes(16, size=32, num_classes=4, seed=0), config=TrainConfig(
        steps=4, batch_size=8, lr=1e-2, progress=False, verbose=False))


def test_a_gpu_checkpoint_loads_on_the_cpu_and_resumes_on_the_gpu(gpu, tmp_path):
    first = _tiny_trainer("cuda")
    first.train_one_epoch()                                    # 2 of the 4 steps
    first.save(tmp_path / "half.npz")
    loaded = load_checkpoint(tmp_path / "half.npz").model      # written from host copies
    assert loaded.device == "cpu"
    for a, b in zip(first.model.state_dict().values(), loaded.state_dict().values()):
        np.testing.assert_array_equal(a.get(), b)
    # resuming on the GPU puts the weights and Adam's moments back on the device
    resumed = _tiny_trainer("cuda")
    resumed.resume(tmp_path / "half.npz")
    moments = [v for s in resumed.optimizer.state.values() for v in s.values()
               if hasattr(v, "shape")]
    assert moments and all(type(v) is gpu.cupy.ndarray for v in moments)
    resumed.fit()
    assert resumed.step == 4 and resumed.model.device == "cuda"
    # and it ends where an uninterrupted CPU run ends
    straight = _tiny_trainer("cpu")
    straight.fit()
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        np.testing.assert_allclose(a, b.get(), rtol=1e-3, atol=1e-4, err_msg=name)


def test_instance_models_stay_on_the_cpu(gpu):
    model = models.create("mask_rcnn", num_classes=4).to("cuda")
    with pytest.raises(ValueError, match=r"Trainer: mask_rcnn is an instance model; those train "
                                         r"on the CPU only"):
        Trainer(model, Shapes(16, size=32, seed=0), config=TrainConfig(progress=False))


def test_cli_trains_on_the_gpu(gpu, tmp_path, capsys):
    argv = ["train", "--data", "shapes", "--steps", "2", "--train-samples", "16",
            "--val-samples", "8", "--size", "32", "--batch-size", "8", "--model-config",
            "depth=1", "base_width=4", "--no-progress", "--device", "cuda",
            "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert "train_loss" in (tmp_path / "history.json").read_text()
    assert load_checkpoint(tmp_path / "last.npz").model.device == "cpu"


def test_cli_refuses_boxsup_on_the_gpu(gpu, tmp_path, capsys):
    argv = ["train", "--data", "shapes", "--supervision", "boxes", "--device", "cuda",
            "--out", str(tmp_path)]
    assert cli.main(argv) == 1
    assert "--supervision boxes runs on the CPU only" in capsys.readouterr().err
