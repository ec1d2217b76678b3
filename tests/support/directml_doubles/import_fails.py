"""`import torch_directml` raises OSError: the DirectML library does not load (no D3D12)."""

raise OSError("libd3d12.so: cannot open shared object file: No such file or directory")
