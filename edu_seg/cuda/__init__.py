"""The CuPy twin of the kernels (imported only when the "cupy" backend is selected)."""
