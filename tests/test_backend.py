"""Backend switch, thread control, show_config, and the fallback when the compiled core is missing."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edu_seg
from edu_seg import _cpu, backend, nn
from edu_seg.autograd import Tensor

#: Whether the compiled core was built with -march=native (the same environment runs
#: `make test`'s build and its tests).
NATIVE_BUILD = os.environ.get("EDU_SEG_NO_NATIVE", "0") in ("", "0")


def test_default_backend_is_cython_when_built():
    assert backend.compiled_core_available(), "the compiled core should be built for the tests"
    assert edu_seg.get_backend() == "cython"


def test_set_and_use_backend():
    edu_seg.set_backend("numpy")
    assert edu_seg.get_backend() == "numpy"
    edu_seg.set_backend("cython")
    with edu_seg.use_backend("numpy"):
        assert edu_seg.get_backend() == "numpy"
    assert edu_seg.get_backend() == "cython"


def test_use_backend_restores_after_an_exception():
    with pytest.raises(KeyError):
        with edu_seg.use_backend("numpy"):
            raise KeyError("boom")
    assert edu_seg.get_backend() == "cython"


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"unknown backend 'torch'"):
        edu_seg.set_backend("torch")


def test_cupy_without_cupy_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy raises ImportError
    with pytest.raises(RuntimeError, match=r"set_backend\('cupy'\): CuPy is not installed; "
                                           r"install it with `pip install cupy-cuda12x`"):
        edu_seg.set_backend("cupy")
    assert edu_seg.get_backend() == "cython"
    with pytest.raises(RuntimeError, match=r"Tensor.to: device 'cuda' needs CuPy and a GPU: "
                                           r"CuPy is not installed"):
        Tensor(np.zeros(2)).to("cuda")
    with pytest.raises(RuntimeError, match=r"Linear.to: device 'cuda' needs CuPy"):
        nn.Linear(2, 2).to("cuda")


def test_cupy_install_command_is_a_real_package():
    # the command the errors print names CuPy's own wheel, not an extra of this package
    assert "`pip install cupy-cuda12x`" in backend.CUPY_INSTALL
    assert "edu_seg[" not in backend.CUPY_INSTALL


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match=r"Tensor.to: device must be one of \('cpu', 'cuda'\), "
                                         r"got 'gpu'"):
        Tensor(np.zeros(2)).to("gpu")


def test_the_data_decides_the_kernels(gpu):
    x = np.zeros((1, 1, 2, 2), np.float32)
    assert backend.kernels("resample", x).__name__ == "edu_seg._kernels.resample"
    with edu_seg.use_backend("numpy"):
        assert backend.kernels("resample", x).__name__ == "edu_seg.reference.resample"
        # GPU arrays run the CUDA twin whatever the backend says
        assert backend.kernels("resample", gpu.to_device(x)).__name__ == "edu_seg.cuda.resample"
    with pytest.raises(ValueError, match=r"inputs live on different devices \(cuda \(1, 1, 2, "
                                         r"2\), cpu \(1, 1, 2, 2\)\)"):
        backend.kernels("conv", gpu.to_device(x), x)


def test_cupy_backend_refuses_host_arrays(gpu):
    edu_seg.set_backend("cupy")
    with pytest.raises(ValueError, match=r"the 'cupy' backend runs on GPU arrays, but the "
                                         r"inputs are NumPy arrays.*Tensor.to\('cuda'\)"):
        backend.kernels("pool", np.zeros((1, 1, 2, 2), np.float32))


def test_tensor_to_moves_data_and_gradient(gpu):
    x = Tensor(np.arange(4.0).reshape(2, 2), requires_grad=True)
    assert x.device == "cpu" and x.to("cpu") is x
    y = x.to("cuda")
    assert y.device == "cuda" and type(y.data) is gpu.cupy.ndarray
    (y * y).sum().to("cpu").backward()
    assert type(x.grad) is np.ndarray                      # the gradient came back to the host
    np.testing.assert_array_equal(x.grad, 2 * x.data)


def test_module_to_moves_parameters_and_buffers(gpu):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert model.to("cuda") is model and model.device == "cuda"
    assert all(type(p.data) is gpu.cupy.ndarray for p in model.parameters())
    assert type(model[1].running_mean) is gpu.cupy.ndarray
    state = model.state_dict()
    model.to("cpu")
    assert model.device == "cpu" and type(model[1].running_var) is np.ndarray
    model.to("cuda").load_state_dict(state)           # a state onto the model's device
    assert type(model[0].weight.data) is gpu.cupy.ndarray


def test_show_config_names_the_gpu(gpu, capsys):
    edu_seg.show_config()
    out = capsys.readouterr().out
    if gpu.kind == "emulated":
        assert "CuPy / GPU           : CUDA emulated on the CPU" in out and "CUDA runtime 12.0" in out
    else:
        assert f"CuPy {gpu.cupy.__version__}" in out


def test_kernels_resolves_per_backend():
    assert backend.kernels("threads").__name__ == "edu_seg._kernels.threads"


def blas_threads():
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_set_num_threads_limits_openmp_and_blas():
    edu_seg.set_num_threads(1)
    assert edu_seg.get_num_threads() == 1
    assert backend._threads.get_num_threads() == 1
    assert blas_threads() == {1}
    edu_seg.set_num_threads(2)
    assert backend._threads.get_num_threads() == 2


def test_blas_threads_follow_the_backend():
    """n BLAS threads for the NumPy reference (its convolutions are BLAS products), one for
    the compiled kernels (a multi-threaded BLAS call leaves spinning threads that stall the
    next OpenMP loop); switching the backend re-applies the rule, in either order."""
    edu_seg.set_num_threads(2)
    assert blas_threads() == {1}
    with edu_seg.use_backend("numpy"):
        assert blas_threads() == {2}
        edu_seg.set_num_threads(2)
        assert blas_threads() == {2}
    assert blas_threads() == {1}


def test_the_thread_limit_reaches_the_blas_of_the_conv_kernels_in_a_fresh_process():
    # The conv GEMMs call SciPy's OpenBLAS, which a fresh process has not loaded when the
    # limit is set from EDU_SEG_NUM_THREADS at import; a limit that missed it would let
    # every conv run the default thread count.
    code = textwrap.dedent("""
        import numpy as np
        import edu_seg
        from edu_seg.functional import conv2d
        from edu_seg.autograd import Tensor
        from threadpoolctl import threadpool_info
        conv2d(Tensor(np.ones((1, 2, 8, 8), np.float32)), Tensor(np.ones((2, 2, 3, 3), np.float32)))
        print(sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
    """)
    env = {**os.environ, "EDU_SEG_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.split() == ["[1]"]


def test_without_any_thread_setting_the_first_kernel_call_limits_blas_to_one_thread():
    # A zoo run or a notebook that never calls set_num_threads must not leave NumPy's BLAS
    # spinning beside the OpenMP loops (a matmul, then a conv); with the NumPy reference the
    # BLAS keeps every CPU.
    code = textwrap.dedent("""
        import os
        import sys
        import numpy as np
        import edu_seg
        from edu_seg.functional import conv2d
        from edu_seg.autograd import Tensor
        from threadpoolctl import threadpool_info
        edu_seg.set_backend(sys.argv[1]) if len(sys.argv) > 1 else None
        np.ones((64, 64)) @ np.ones((64, 64))
        conv2d(Tensor(np.ones((1, 2, 8, 8), np.float32)), Tensor(np.ones((2, 2, 3, 3), np.float32)))
        print(sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}),
              os.cpu_count())
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("EDU_SEG_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    compiled = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True)
    assert compiled.stdout.split()[0] == "[1]"
    reference = subprocess.run([sys.executable, "-c", code, "numpy"], capture_output=True,
                               text=True, env=env, check=True)
    blas, cpus = reference.stdout.split()
    assert blas == f"[{cpus}]"


def test_the_numpy_reference_keeps_every_cpu_for_blas_without_the_compiled_core(monkeypatch):
    # Without the compiled core the NumPy reference is all there is, and its convolutions are
    # BLAS products: the rule must not leave them one thread.
    monkeypatch.setattr(backend, "_threads", None)
    monkeypatch.setitem(backend._state, "num_threads", None)
    monkeypatch.setitem(backend._state, "backend", "numpy")
    backend._limit_blas()
    assert blas_threads() == {os.cpu_count()}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_set_num_threads_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="set_num_threads: n must be a positive integer"):
        edu_seg.set_num_threads(bad)


def test_show_config_reports_everything(capsys):
    edu_seg.show_config()
    out = capsys.readouterr().out
    for field in ("edu_seg 0.1.0", "backend", "compiled core", "OpenMP", "threads", "BLAS",
                  "OPENBLAS_CORETYPE", "CuPy / GPU"):
        assert field in out


def test_show_config_names_the_gemm_vectors_this_cpu_was_built_for(capsys):
    # The kernels are compiled with -march=native: a CPU with AVX-512 gets that micro-kernel,
    # any other the 8-float one (built for AVX-512, it ran 15-20x slower there).
    pytest.importorskip("edu_seg._kernels.conv")
    edu_seg.show_config()
    out = capsys.readouterr().out
    avx512 = edu_seg._startup._cpu_has_avx512() and NATIVE_BUILD
    assert f"built for {'AVX-512' if avx512 else '8 floats per register'}" in out


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_a_core_built_for_instructions_this_cpu_lacks_is_not_loaded():
    """A build recorded for a flag this CPU lacks (here a made-up one): edu_seg must warn, name
    the flag and the fix, and run on NumPy, instead of dying of an illegal instruction."""
    code = f"""
        import importlib.util, sys, warnings
        spec = importlib.util.spec_from_file_location("edu_seg._cpu", {str(_cpu.__file__)!r})
        cpu = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cpu)
        cpu.read_build_flags = lambda path=None: ("sse4_2", "made_up_isa")
        sys.modules["edu_seg._cpu"] = cpu
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import edu_seg
        msgs = [str(w.message) for w in caught if "compiled core" in str(w.message)]
        print(len(msgs), edu_seg.get_backend(), "made_up_isa" in msgs[0], "make build" in msgs[0])
    """
    assert _run(code).stdout.split() == ["1", "numpy", "True", "True"]


def test_the_build_records_the_vector_flags_of_this_cpu():
    # written by setup.py next to the compiled modules; on Linux only
    here = _cpu.cpu_flags()
    if here is None or _cpu.read_build_flags() is None:
        pytest.skip("no /proc/cpuinfo, or the core was built elsewhere")
    assert _cpu.read_build_flags() == (_cpu.vector_flags(here) if NATIVE_BUILD else ())
    assert _cpu.flags_missing_here(_cpu.read_build_flags(), here) == ()


def test_cpu_flag_helpers(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n")
    assert _cpu.cpu_flags(str(info)) == {"fpu", "sse4_2", "avx", "avx2", "fma"}
    assert _cpu.cpu_model_name(str(info)) == "AMD EPYC"
    assert _cpu.cpu_flags(str(tmp_path / "missing")) is None
    assert _cpu.cpu_model_name(str(tmp_path / "missing")) is None
    assert _cpu.vector_flags({"fpu", "avx2", "sse4_2", "avx512f"}) == ("sse4_2", "avx2", "avx512f")
    built = tmp_path / "flags.txt"
    built.write_text("avx2 avx512f\n")
    assert _cpu.read_build_flags(str(built)) == ("avx2", "avx512f")
    assert _cpu.read_build_flags(str(tmp_path / "none.txt")) is None
    assert _cpu.flags_missing_here(("avx2", "avx512f"), {"avx2"}) == ("avx512f",)
    assert _cpu.flags_missing_here(("avx2",), {"avx2", "avx512f"}) == ()
    assert _cpu.flags_missing_here(None, {"avx2"}) == ()
    assert _cpu.flags_missing_here(("avx512f",), None) == ()
    assert _cpu.widest_vectors({"avx", "avx2", "avx512f"}) == "AVX-512"
    assert _cpu.widest_vectors({"avx", "avx2", "fma"}) == "AVX2"
    assert _cpu.widest_vectors({"sse4_2"}) is None and _cpu.widest_vectors(None) is None


def test_figures_name_the_cpu_with_its_vectors():
    """Two machines with one model name ("AMD EPYC") can differ in AVX-512, which doubles the
    kernels' speed: the zoo's and the benchmarks' rows must tell them apart."""
    from edu_seg.bench.recipe import cpu_name

    vectors = _cpu.widest_vectors(_cpu.cpu_flags())
    assert cpu_name().endswith(f" ({vectors})") if vectors else "(" not in cpu_name()


def test_missing_compiled_core_falls_back_to_numpy_with_one_warning():
    """Hide the compiled modules with an import hook: edu_seg must warn once and run on NumPy."""
    code = """
        import sys, warnings
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.startswith("edu_seg._kernels."):
                    raise ImportError("simulated missing build")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import edu_seg
            import edu_seg.backend
        msgs = [str(w.message) for w in caught if "compiled core" in str(w.message)]
        print(len(msgs), edu_seg.get_backend())
        x = edu_seg.Tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        print(x.grad.tolist())
        try:
            edu_seg.set_backend("cython")
        except RuntimeError as e:
            print("refused:", "not built" in str(e))
    """
    out = _run(code).stdout.split("\n")
    assert out[0] == "1 numpy", out
    assert out[1] == "[2.0, 4.0]"
    assert out[2] == "refused: True"


def test_env_var_sets_threads():
    out = _run("import edu_seg; print(edu_seg.get_num_threads())", EDU_SEG_NUM_THREADS="1")
    assert out.stdout.strip() == "1", out.stderr


def test_openblas_coretype_is_set_before_numpy_on_avx512():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    code = "import edu_seg, os; print(os.environ.get('OPENBLAS_CORETYPE'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    has_avx512 = edu_seg._startup._cpu_has_avx512()
    assert out.stdout.strip() == ("SkylakeX" if has_avx512 else "None")
