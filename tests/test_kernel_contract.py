"""Every backend provides exactly the written list of kernels (edu_seg.backend.KERNEL_CONTRACT).

The NumPy reference and the compiled core are imported and their signatures read; the CUDA
twin is read from its source (``ast``), so the check runs without CuPy.
"""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

import edu_seg.cuda
from edu_seg.backend import BACKEND_EXTRAS, KERNEL_CONTRACT

MODULES = sorted(KERNEL_CONTRACT)


def _public_functions_of_module(module):
    """{name: "(params)"} of the public callables a kernel module defines or re-exports."""
    out = {}
    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            continue
        if not (getattr(value, "__module__", None) or "").startswith("edu_seg."):
            continue                      # imported from elsewhere (numpy, dataclasses, ...)
        out[name] = str(inspect.signature(value))
    return out


def _public_functions_of_source(path):
    """The same for a CUDA twin read as text: its defs and its re-exported names (``__all__``)."""
    tree = ast.parse(path.read_text())
    out = {node.name: "(" + ast.unparse(node.args) + ")" for node in tree.body
           if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    imported = {alias.asname or alias.name for node in tree.body
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    exported = next((ast.literal_eval(node.value) for node in tree.body
                     if isinstance(node, ast.Assign)
                     and any(getattr(t, "id", "") == "__all__" for t in node.targets)), [])
    for name in exported:
        if name not in out:
            assert name in imported, f"{path.name}: __all__ names {name!r}, which is not there"
            reference = getattr(importlib.import_module(f"edu_seg.reference.{path.stem}"), name)
            out[name] = str(inspect.signature(reference))
    return out


def _check(backend, module, functions):
    contract = KERNEL_CONTRACT[module]
    extras = set(BACKEND_EXTRAS[backend].get(module, ()))
    assert set(functions) - extras == set(contract), (
        f"{backend} {module}: missing {sorted(set(contract) - set(functions))}, "
        f"not in the contract {sorted(set(functions) - extras - set(contract))}")
    for name, signature in contract.items():
        assert functions[name] == signature, f"{backend} {module}.{name}{functions[name]}"


@pytest.mark.parametrize("module", MODULES)
def test_reference_provides_the_contract(module):
    _check("numpy", module, _public_functions_of_module(
        importlib.import_module(f"edu_seg.reference.{module}")))


@pytest.mark.parametrize("module", MODULES)
def test_compiled_core_provides_the_contract(module):
    compiled = pytest.importorskip(f"edu_seg._kernels.{module}")
    _check("cython", module, _public_functions_of_module(compiled))


@pytest.mark.parametrize("module", MODULES)
def test_cuda_twin_provides_the_contract(module):
    source = Path(edu_seg.cuda.__file__).with_name(f"{module}.py")
    assert source.exists(), f"edu_seg/cuda/{module}.py is missing"
    assert source.with_suffix(".cu").exists(), f"edu_seg/cuda/{module}.cu is missing"
    _check("cupy", module, _public_functions_of_source(source))


def test_every_kernel_module_is_in_the_contract():
    reference = {p.stem for p in Path(edu_seg.cuda.__file__).parents[1].joinpath(
        "reference").glob("*.py") if not p.stem.startswith("_")}
    assert reference == set(MODULES)


def test_cuda_sources_are_ascii():
    # CuPy's compile cache encodes the source as ASCII on some versions: a non-ASCII character
    # in a comment would fail on a real GPU only, where the emulated tests cannot see it.
    for source in Path(edu_seg.cuda.__file__).parent.glob("*.cu"):
        text = source.read_text(encoding="utf-8")
        bad = [i for i, ch in enumerate(text) if ord(ch) > 127]
        assert not bad, f"{source.name}: non-ASCII {text[bad[0]]!r} at line " \
                        f"{text.count(chr(10), 0, bad[0]) + 1}"
