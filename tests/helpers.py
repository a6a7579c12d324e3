"""Small helpers shared by the model tests (pytest puts this folder on ``sys.path``)."""
import numpy as np

from edu_seg.autograd import Tensor, no_grad


def random_images(n, size=64, seed=0, channels=3):
    """``n`` standard-normal float32 images ``(n, channels, size, size)``, the same for a seed."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, channels, size, size)).astype(np.float32)


def record_forward(model, modules, x):
    """Run ``model`` on ``x`` without gradients; return (output, seen) where ``seen[key]`` is
    ``(first input array, output)`` of ``modules[key]`` at its FIRST call."""
    seen = {}

    def hook(key):
        return lambda m, args, y: seen.setdefault(key, (args[0].data, y))
    handles = [m.register_forward_hook(hook(k)) for k, m in modules.items()]
    try:
        with no_grad():
            out = model(Tensor(x))
    finally:
        for h in handles:
            h.remove()
    return out, seen
