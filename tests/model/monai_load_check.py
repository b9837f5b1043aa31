"""Loads C++-written model.pth files into MONAI's UNet (strict) and writes their forward outputs.

usage: monai_load_check.py JOBS_JSON
JOBS_JSON holds a list of {"model": path, "config": UNet kwargs without spatial_dims,
"input": float32 file, "shape": input shape, "output": float32 file to write}.
Prints one line per job; exits non-zero on any failure.
"""
import json
import sys

import numpy as np
import torch
import monai
from monai.networks.nets import UNet

print(f"torch {torch.__version__}, monai {monai.__version__}")
for job in json.load(open(sys.argv[1])):
    # PyTorch >= 2.6 defaults to weights_only=True, which rejects the type tag torch::pickle_save
    # writes (torch.jit._pickle.restore_type_tag); medseg documents weights_only=False.
    state = torch.load(job["model"], map_location="cpu", weights_only=False)
    assert type(state) is dict, f"torch.load returned {type(state)}"
    net = UNet(spatial_dims=3, **job["config"])
    net.load_state_dict(state, strict=True)
    net.eval()
    x = torch.from_numpy(np.fromfile(job["input"], dtype="<f4").reshape(job["shape"]))
    with torch.no_grad():
        y = net(x)
    y.numpy().astype("<f4").tofile(job["output"])
    print(f"{job['model']}: strict load of {len(state)} tensors, output {list(y.shape)}")
