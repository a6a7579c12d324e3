"""The CUDA twin on a GPU against PyTorch CUDA: convolution, pooling, resampling, RoIAlign and
the reference U-Net training step (batch 8, 64×64, the model of ``bench_train.py``).

Runs only where CuPy finds a GPU; elsewhere the section says so and nothing is timed (the CUDA
kernels are still checked on every machine by the emulated tests, ``tests/cuda_emulation``).
Every timed call ends with a device synchronisation, so a figure is the kernels' time, not the
launch's.
"""
import numpy as np

import edu_seg.functional as F
from bench_train import edu_step_fn, torch_step_fn
from common import md_table, time_fn, torch_or_none
from edu_seg import backend
from edu_seg.autograd import Tensor

TITLE = "GPU: the CUDA twin (CuPy) against PyTorch CUDA"


def _cases(rng):
    """(name, edu_seg op, torch op, input shape, extra arrays): one row each."""
    boxes = np.concatenate([rng.integers(0, 8, (128, 1)), rng.uniform(0, 96, (128, 2)),
                            rng.uniform(128, 256, (128, 2))], axis=1).astype(np.float32)
    return [
        ("conv2d 3×3, N8 C32→32, 64×64", (8, 32, 64, 64),
         lambda x, p: F.conv2d(x, p["w"], padding=1),
         lambda tf, x, p: tf.conv2d(x, p["w"], padding=1),
         {"w": rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1}),
        ("conv2d 3×3 dilation 2, N8 C64→64, 32×32", (8, 64, 32, 32),
         lambda x, p: F.conv2d(x, p["w"], padding=2, dilation=2),
         lambda tf, x, p: tf.conv2d(x, p["w"], padding=2, dilation=2),
         {"w": rng.standard_normal((64, 64, 3, 3)).astype(np.float32) * 0.1}),
        ("conv_transpose2d 2×2 s2, N8 C64→32, 32×32", (8, 64, 32, 32),
         lambda x, p: F.conv_transpose2d(x, p["w"], stride=2),
         lambda tf, x, p: tf.conv_transpose2d(x, p["w"], stride=2),
         {"w": rng.standard_normal((64, 32, 2, 2)).astype(np.float32) * 0.1}),
        ("max_pool2d 2×2, N8 C32, 64×64", (8, 32, 64, 64),
         lambda x, p: F.max_pool2d(x, 2), lambda tf, x, p: tf.max_pool2d(x, 2), {}),
        ("bilinear ×2, N8 C32, 32×32", (8, 32, 32, 32),
         lambda x, p: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
         lambda tf, x, p: tf.interpolate(x, scale_factor=2, mode="bilinear",
                                         align_corners=False), {}),
        ("roi_align 7×7, 128 boxes, N8 C64 32×32", (8, 64, 32, 32),
         lambda x, p: F.roi_align(x, boxes, 7, spatial_scale=1 / 8, sampling_ratio=2,
                                  aligned=True),
         None, {}),
    ]


def _edu_row(cupy, sync, shape, op, params, rng):
    x0 = rng.standard_normal(shape).astype(np.float32)
    p = {k: Tensor(cupy.asarray(v), requires_grad=True) for k, v in params.items()}

    def forward():
        op(Tensor(cupy.asarray(x0)), p)
        sync()

    def forward_backward():
        x = Tensor(cupy.asarray(x0), requires_grad=True)
        op(x, p).sum().backward()
        sync()

    return time_fn(forward), time_fn(forward_backward)


def _torch_row(torch, shape, op, params, rng):
    tf, sync = torch.nn.functional, torch.cuda.synchronize
    x0 = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).cuda()
    p = {k: torch.from_numpy(v).cuda().requires_grad_() for k, v in params.items()}

    def forward():
        with torch.no_grad():
            op(tf, x0, p)
        sync()

    def forward_backward():
        op(tf, x0.clone().requires_grad_(), p).sum().backward()
        sync()

    return time_fn(forward), time_fn(forward_backward)


def _ms(t):
    return f"{t[0]:.3f} ({t[1]:.3f})"


def run():
    problem = backend._cupy_problem()
    if problem:
        return (f"Not measured: {problem}. Nothing here ran on a GPU; the CUDA kernels are "
                f"checked against the NumPy reference on every machine by the emulated tests "
                f"(`tests/cuda_emulation`).")
    import cupy

    sync = cupy.cuda.Device().synchronize
    torch = torch_or_none()
    torch_cuda = torch is not None and torch.cuda.is_available()
    rng = np.random.default_rng(0)
    rows = []
    for name, shape, edu_op, torch_op, params in _cases(rng):
        fwd, fwd_bwd = _edu_row(cupy, sync, shape, edu_op, params, rng)
        row = [name, _ms(fwd), _ms(fwd_bwd)]
        if torch_cuda and torch_op is not None:
            tfwd, tfwd_bwd = _torch_row(torch, shape, torch_op, params, rng)
            row += [_ms(tfwd), _ms(tfwd_bwd), f"{fwd_bwd[0] / tfwd_bwd[0]:.2f}"]
        else:
            row += ["n/a"] * 3
        rows.append(row)
    _, _, step = edu_step_fn("cuda")
    edu_step = time_fn(lambda: (step(), sync()))
    row = ["U-Net training step, batch 8, 64×64", "", _ms(edu_step)]
    if torch_cuda:
        torch_step = torch_step_fn(torch, "cuda")
        t = time_fn(lambda: (torch_step(), torch.cuda.synchronize()))
        row += ["", _ms(t), f"{edu_step[0] / t[0]:.2f}"]
    else:
        row += ["n/a"] * 3
    rows.append(row)
    device = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    device = device.decode() if isinstance(device, bytes) else device
    return (f"On {device}, CuPy {cupy.__version__}; ms, median (min).\n\n"
            + md_table(["case", "ours fwd", "ours fwd+bwd", "PyTorch fwd", "PyTorch fwd+bwd",
                        "fwd+bwd ratio"], rows))
