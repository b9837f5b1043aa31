#!/usr/bin/env python3
"""Generate the MONAI reference fixtures in tests/data/monai/ (our own script, not MONAI code).

What it writes (all raw arrays are little-endian, C order, described in manifest.json):
  static/<case>/   NIfTI inputs (image + label) and MONAI's outputs after Spacing, after
                   Orientation and after NormalizeIntensity (image float32 [C,X,Y,Z],
                   label uint8 [3,X,Y,Z] = TC, WT, ET with the "msd" scheme).
  unet/<config>/   weights.bin (float32 state dict, concatenated in state-dict order),
                   weights.json (name, shape, byte offset) and output.bin (eval-mode forward of
                   unet/input.bin). unet/default/weights.json has names/shapes only (no values).
  manifest.json    everything the C++ tests need (shapes, affines, files, versions, facts).

Made with the versions pinned in scripts/requirements*.txt (MONAI 1.6.1, torch 2.11, nibabel
5.4; manifest.json records them) on an AVX-512 CPU (torch's linspace kernel, and with it the last
bits of the resampling grid, follows the CPU). MONAI is only imported, never copied here.

Regenerate, after scripts/setup.sh made the project's Python environment:
  .venv/bin/python tests/data/monai/make_fixtures.py
The script is deterministic (fixed seeds); it rewrites its output folders in place.

Fresh cases for the live comparison the tests run with the project's MONAI (scripts/setup.sh):
  .venv/bin/python tests/data/monai/make_fixtures.py --out DIR --seed N --random-geometry --static-only
draws new shapes, voxel sizes, rotations, translations, pixdims and contents from the seed for
the same kinds of case (LPS, oblique qform-only, int16 with scaling, NIfTI-2, ...) and writes the
same layout (DIR/manifest.json, DIR/static/<case>/...).
"""
import argparse
import gzip
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

import monai
from monai.data import MetaTensor
from monai.data.utils import compute_shape_offset, zoom_affine
from monai.networks.nets import UNet
from monai.transforms import (EnsureChannelFirstd, LoadImaged, NormalizeIntensityd, Orientationd,
                              Spacingd)

OUT = Path(__file__).resolve().parent  # --out replaces it
assert sys.byteorder == "little"


# ----------------------------------------------------------------------------- helpers
def rot(axis, deg):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine(rzs, t):
    a = np.eye(4)
    a[:3, :3], a[:3, 3] = rzs, t
    return a


def phantom(rng, shape, nchan):
    """Smooth content (sum of gaussians + mild noise) inside an ellipsoid 'brain', exact 0 outside.
    Returns (image [X,Y,Z,C] float64, brain mask, msd label uint8 with values 0..3)."""
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = (g[0] / 0.85) ** 2 + (g[1] / 0.8) ** 2 + (g[2] / 0.9) ** 2 < 1.0
    img = np.zeros(shape + (nchan,))
    for c in range(nchan):
        v = np.full(shape, 50.0 + 20 * c)
        for _ in range(5):
            mu, sd, amp = rng.uniform(-0.6, 0.6, 3), rng.uniform(0.2, 0.6), rng.uniform(-30, 80)
            v += amp * np.exp(-sum((g[k] - mu[k]) ** 2 for k in range(3)) / (2 * sd * sd))
        v += rng.normal(0, 1.5, shape)
        img[..., c] = np.where(brain, v, 0.0)
    ctr = rng.uniform(-0.25, 0.25, 3)
    r = np.sqrt(sum(((g[k] - ctr[k]) / s) ** 2 for k, s in enumerate((1.0, 1.1, 0.9))))
    lab = np.zeros(shape, np.uint8)
    lab[r < 0.55] = 1  # edema
    lab[r < 0.40] = 3  # enhancing (shell)
    lab[r < 0.22] = 2  # non-enhancing core
    lab[~brain] = 0
    return img, brain, lab


def msd_channels(lab):
    """Our own label -> [TC, WT, ET] conversion (msd scheme: TC = 2|3, WT = 1|2|3, ET = 3)."""
    lab = lab.as_tensor() if isinstance(lab, MetaTensor) else torch.as_tensor(lab)
    return torch.stack([(lab == 2) | (lab == 3), (lab == 1) | (lab == 2) | (lab == 3), lab == 3]).float()


def save_nifti(path, data, aff, kind="nifti1", sform_code=1, qform_code=1, dtype=None, slope_inter=None):
    cls = nib.Nifti2Image if kind == "nifti2" else nib.Nifti1Image
    img = cls(data, None)
    img.set_sform(aff, code=sform_code)
    img.set_qform(aff, code=qform_code)
    img.set_data_dtype(dtype or data.dtype)
    nib.save(img, str(path))
    if slope_inter:  # nibabel resets scl_* for integer data on save: patch the header bytes
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        raw = raw[:112] + struct.pack("<ff", *slope_inter) + raw[120:]  # scl_slope @112, scl_inter @116
        path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)
    back = nib.load(str(path))  # check the header is what we asked for
    assert int(back.header["sform_code"]) == sform_code and int(back.header["qform_code"]) == qform_code
    if slope_inter:
        assert (float(back.dataobj.slope), float(back.dataobj.inter)) == slope_inter  # nibabel moves scl_* here
    return back


def write_raw(path, arr, dtype):
    a = np.ascontiguousarray(np.asarray(arr), dtype=dtype)
    path.write_bytes(a.astype(a.dtype.newbyteorder("<")).tobytes())
    return {"file": str(path.relative_to(OUT)), "dtype": np.dtype(dtype).name, "shape": list(a.shape)}


def aff_list(a):
    return np.asarray(a, dtype=np.float64).tolist()


# ----------------------------------------------------------------------------- A. static transforms
CASES = [
    dict(name="lps_aniso", shape=(23, 19, 13), nchan=4, kind="nifti1", ext=".nii.gz",
         aff=affine(np.diag([-0.95, -1.1, 2.7]), [10.5, 12.0, -15.0]), dtype=np.float32,
         sform_code=1, qform_code=1, pixdim=(1.2, 1.4, 2.1),
         what="LPS affine, anisotropic 0.95 x 1.1 x 2.7 mm, float32, sform_code 1"),
    dict(name="oblique", shape=(22, 20, 12), nchan=3, kind="nifti1", ext=".nii",
         aff=affine(rot(2, 20) @ rot(0, -18) @ np.diag([1.1, 1.0, 1.6]), [-12.3, 7.7, 20.1]),
         dtype=np.float32, sform_code=0, qform_code=1, pixdim=(1.3, 1.2, 1.9),
         what="oblique (20 deg about z, -18 deg about x) with translation, .nii, qform only"),
    dict(name="int16_scaled", shape=(21, 18, 14), nchan=2, kind="nifti1", ext=".nii.gz",
         aff=affine(np.array([[0, 0, 1.2], [-1.0, 0, 0], [0, 1.3, 0]]), [-8.0, 9.0, -6.0]),
         dtype=np.int16, slope_inter=(0.5, 10.0), sform_code=1, qform_code=0, pixdim=(1.1, 1.4, 1.5),
         what="int16 with scl_slope 0.5, scl_inter 10; voxel axes P,S,R (Orientation transposes)"),
    dict(name="nifti2", shape=(20, 22, 12), nchan=4, kind="nifti2", ext=".nii.gz",
         aff=affine(np.diag([-1.3, 0.8, 2.2]), [15.0, -20.0, -10.0]), dtype=np.float64,
         sform_code=2, qform_code=1, pixdim=(1.5, 1.5, 2.0),
         what="NIfTI-2, float64 image, LAS, default pixdim (1.5, 1.5, 2.0)"),
    dict(name="zeros_channel", shape=(16, 14, 10), nchan=4, kind="nifti1", ext=".nii.gz",
         aff=affine(np.diag([-1.5, 1.5, 2.0]), [11.0, -9.0, 4.0]), dtype=np.float32,
         sform_code=1, qform_code=1, pixdim=(1.5, 1.5, 2.0),
         what="pixdim == native spacing (Spacing is a no-op); ch1 = 0 or exactly 7.0 (std 0 -> 1), "
              "ch2 all zeros, ch3 = 0 in part and smooth elsewhere"),
    dict(name="half_ties", shape=(8, 7, 6), nchan=2, kind="nifti1", ext=".nii.gz",
         aff=affine(np.diag([3.0, 2.0, 2.0]), [0.0, 0.0, 0.0]), dtype=np.float32,
         sform_code=1, qform_code=1, pixdim=(1.5, 1.0, 1.0),
         what="exact 2x upsampling: every odd output voxel samples a .5 position (nearest ties)"),
]


def random_geometry(case, rng):
    """The case with shape, voxel size, rotation, translation and pixdim drawn from `rng`; the
    kind of case (orientation class, dtype, header codes, file format) stays."""
    case = dict(case)
    if case["name"] == "half_ties":
        return case  # exact 2x upsampling by construction
    shape = tuple(int(n) for n in rng.integers(9, 26, 3))
    zooms = rng.uniform(0.7, 3.0, 3)
    # The voxel axes' directions: the case's own (a signed permutation: LPS, LAS, P/S/R, ...), or
    # for the oblique case a new rotation about all three axes.
    direction = case["aff"][:3, :3] / np.linalg.norm(case["aff"][:3, :3], axis=0)
    if case["name"] == "oblique":
        direction = rot(2, rng.uniform(-40, 40)) @ rot(0, rng.uniform(-40, 40)) @ rot(1, rng.uniform(-15, 15))
    rzs = direction @ np.diag(zooms)
    pixdim = tuple(float(p) for p in rng.uniform(0.8, 2.6, 3))
    if case["name"] == "zeros_channel":
        pixdim = tuple(float(z) for z in zooms)  # Spacing stays a no-op
    case.update(shape=shape, aff=affine(rzs, rng.uniform(-30, 30, 3)), pixdim=pixdim,
                what=case["what"] + " (random geometry)")
    return case


def make_inputs(case, rng, d):
    img, brain, lab = phantom(rng, case["shape"], case["nchan"])
    if case["name"] == "zeros_channel":
        half = np.zeros(case["shape"], bool)
        half[: case["shape"][0] // 2] = True
        img[..., 1] = np.where(half, 0.0, 7.0)  # exactly constant where nonzero
        img[..., 2] = 0.0
        img[..., 3] = np.where(half, 0.0, img[..., 3])
    if case["dtype"] == np.int16:
        slope, inter = case["slope_inter"]
        raw = np.round((img - inter) / slope)
        raw[img == 0] = -inter / slope  # stored -20 -> scaled exactly 0
        data = raw.astype(np.int16)
    else:
        data = img.astype(case["dtype"])
    kw = dict(kind=case["kind"], sform_code=case["sform_code"], qform_code=case["qform_code"])
    im = save_nifti(d / ("image" + case["ext"]), data, case["aff"], slope_inter=case.get("slope_inter"), **kw)
    lb = save_nifti(d / ("label" + case["ext"]), lab, case["aff"], **kw)
    return im, lb


def static_case(case, rng):
    d = OUT / "static" / case["name"]
    d.mkdir(parents=True)
    im, lb = make_inputs(case, rng, d)
    pixdim = case["pixdim"]
    keys = ["image", "label"]
    data = LoadImaged(keys=keys)({"image": str(d / ("image" + case["ext"])), "label": str(d / ("label" + case["ext"]))})
    data = EnsureChannelFirstd(keys="image")(data)
    lab = data["label"]
    data["label"] = MetaTensor(msd_channels(lab), meta=lab.meta)
    loaded_aff = data["image"].affine.numpy().copy()
    assert np.allclose(loaded_aff, data["label"].affine.numpy())
    spacing = Spacingd(keys=keys, pixdim=pixdim, mode=("bilinear", "nearest"))
    orient = Orientationd(keys=keys, axcodes="RAS")
    norm = NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)

    entry = {
        "description": case["what"],
        "inputs": {
            k: {"file": str((d / (k + case["ext"])).relative_to(OUT)), "format": case["kind"],
                "on_disk_dtype": str(x.get_data_dtype()), "shape": list(x.shape),
                "sform_code": int(x.header["sform_code"]), "qform_code": int(x.header["qform_code"]),
                "scl_slope_inter": [float(x.dataobj.slope), float(x.dataobj.inter)],
                "nibabel_affine": aff_list(x.affine)}
            for k, x in (("image", im), ("label", lb))},
        "label_scheme": "msd",
        "pixdim": list(pixdim),
        "loaded": {"image_shape": list(data["image"].shape), "image_dtype": str(data["image"].dtype),
                   "image_sum_f64": float(data["image"].double().sum()),
                   "affine": aff_list(loaded_aff),
                   "affine_equals_nibabel": bool(np.array_equal(loaded_aff, im.affine))},
    }
    # what MONAI's helpers say about the Spacing geometry (called, not copied)
    new_aff = zoom_affine(loaded_aff, np.array(pixdim, float), diagonal=False)
    shp, off = compute_shape_offset(data["image"].shape[1:], loaded_aff, new_aff)
    corner0 = bool(np.allclose(off, loaded_aff[:3, 3], rtol=0, atol=1e-12))

    data = spacing(data)
    sp_aff = data["image"].affine.numpy().copy()
    entry["spacing"] = {
        "output_shape": list(data["image"].shape[1:]), "affine": aff_list(sp_aff),
        "shape_from_compute_shape_offset": [int(s) for s in shp],
        "voxel0_maps_to_input_voxel0": corner0,
        "resampled": not np.array_equal(sp_aff, loaded_aff) or list(shp) != list(im.shape[:3]),
        "compute_dtype": str(spacing.spacing_transform.sp_resample.dtype.__name__),
        "image": write_raw(d / "spacing_image_f32.bin", data["image"], np.float32),
        "label": write_raw(d / "spacing_label_u8.bin", data["label"], np.uint8),
    }
    assert np.array_equal(data["label"].numpy(), data["label"].numpy().astype(np.uint8))
    v = data["image"].numpy()
    # bilinear round-off leaves |v| ~ 1e-12 where the exact answer is 0; NormalizeIntensity(nonzero)
    # then treats them as brain voxels. C++ tests should not demand bit-exactness there.
    entry["spacing"]["tiny_nonzero_count"] = int(((v != 0) & (np.abs(v) < 1e-6)).sum())
    ornt = nib.orientations.ornt_transform(nib.io_orientation(sp_aff), nib.orientations.axcodes2ornt("RAS"))
    data = orient(data)
    entry["orientation"] = {
        "ornt_transform": ornt.astype(int).tolist(), "output_shape": list(data["image"].shape[1:]),
        "affine": aff_list(data["image"].affine),
        "image": write_raw(d / "orientation_image_f32.bin", data["image"], np.float32),
        "label": write_raw(d / "orientation_label_u8.bin", data["label"], np.uint8),
    }
    pre = data["image"].as_tensor().clone()
    data = norm(data)
    stats = []
    for c in range(pre.shape[0]):
        m = pre[c][pre[c] != 0]
        stats.append({"nonzero_count": int(m.numel()),
                      "mean": float(torch.mean(m)) if m.numel() else None,
                      "std_population": float(torch.std(m, unbiased=False)) if m.numel() else None})
    entry["final"] = {
        "output_shape": list(data["image"].shape[1:]), "affine": aff_list(data["image"].affine),
        "channel_stats_before_normalize": stats,
        "image": write_raw(d / "final_image_f32.bin", data["image"], np.float32),
        "label": write_raw(d / "final_label_u8.bin", data["label"], np.uint8),
    }
    # fact checks on MONAI's behaviour, recorded for the NOTES
    f = data["image"].as_tensor()
    entry["final"]["zeros_stay_zero"] = bool((f[pre == 0] == 0).all())
    # float32 recomputation: (v - float(mean)) / float(std) with torch scalar ops
    redo = pre.clone()
    for c in range(pre.shape[0]):
        s = stats[c]
        if s["mean"] is not None:
            mask = pre[c] != 0
            redo[c][mask] = (pre[c][mask] - s["mean"]) / (s["std_population"] or 1.0)
    entry["final"]["matches_torch_scalar_recompute_bitwise"] = bool(torch.equal(redo, f))
    return entry


# ----------------------------------------------------------------------------- B. UNet
UNET_CONFIGS = {
    "default": dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2),
    "small_res2": dict(channels=(4, 8, 16), strides=(2, 2), num_res_units=2),
    "small_res0": dict(channels=(4, 8, 16), strides=(2, 2), num_res_units=0),
    "small_res1_s21": dict(channels=(4, 8, 16), strides=(2, 1), num_res_units=1),
}


def unet_fixtures():
    udir = OUT / "unet"
    udir.mkdir()
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(1, 4, 16, 16, 16, generator=g)
    info = {"input": write_raw(udir / "input_f32.bin", x, np.float32), "configs": {}}
    for name, cfg in UNET_CONFIGS.items():
        torch.manual_seed(0)
        net = UNet(spatial_dims=3, in_channels=4, out_channels=3, **cfg).eval()
        sd = net.state_dict()
        cdir = udir / name
        cdir.mkdir()
        table, off = [], 0
        for k, v in sd.items():
            table.append({"name": k, "shape": list(v.shape), "offset": off, "numel": v.numel()})
            off += 4 * v.numel()
        n_params = sum(p.numel() for p in net.parameters())
        meta = {"monai_version": monai.__version__, "config": dict(spatial_dims=3, in_channels=4, out_channels=3, **{
            k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}), "init": "torch.manual_seed(0)",
            "dtype": "float32", "byte_order": "little", "num_parameters": n_params,
            "num_state_dict_tensors": len(sd), "total_bytes": off, "tensors": table}
        entry = {"config": meta["config"], "num_parameters": n_params, "num_state_dict_tensors": len(sd),
                 "weights_json": str((cdir / "weights.json").relative_to(OUT))}
        if name == "default":
            assert n_params == 4_810_074 and len(sd) == 63, (n_params, len(sd))
            meta["values"] = "not stored (19 MB); names/shapes/offsets only"
        else:
            with open(cdir / "weights.bin", "wb") as fh:
                for v in sd.values():
                    fh.write(v.detach().contiguous().numpy().astype("<f4").tobytes())
            meta["file"] = "weights.bin"
            with torch.no_grad():
                y = net(x)
            entry["output"] = write_raw(cdir / "output_f32.bin", y, np.float32)
            entry["weights_bin"] = str((cdir / "weights.bin").relative_to(OUT))
        (cdir / "weights.json").write_text(json.dumps(meta, indent=1) + "\n")
        if name == "small_res2":
            torch.save({k: v.clone() for k, v in sd.items()}, udir / "small_state_dict.pt")
            size = (udir / "small_state_dict.pt").stat().st_size
            if size >= 100_000:
                (udir / "small_state_dict.pt").unlink()
            else:
                entry["torch_save"] = "unet/small_state_dict.pt"
        info["configs"][name] = entry
    return info


# ----------------------------------------------------------------------------- main
def main():
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: beside this script)")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--random-geometry", action="store_true", help="draw each case's geometry from the seed")
    parser.add_argument("--static-only", action="store_true", help="skip the UNet fixtures")
    args = parser.parse_args()
    OUT = args.out.resolve()
    OUT.mkdir(parents=True, exist_ok=True)
    for sub in ("static",) if args.static_only else ("static", "unet"):
        shutil.rmtree(OUT / sub, ignore_errors=True)
    (OUT / "static").mkdir()
    rng = np.random.default_rng(args.seed)
    manifest = {
        "generator": "tests/data/monai/make_fixtures.py",
        "monai_version": monai.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_version": torch.__version__, "numpy_version": np.__version__, "nibabel_version": nib.__version__,
        "raw_arrays": "little-endian, C order; image float32 [C,X,Y,Z]; label uint8 [3,X,Y,Z] = TC, WT, ET",
        "pipeline": ["LoadImaged(keys=[image,label])  # image_only=True, dtype float32",
                     "EnsureChannelFirstd(keys=image)",
                     "label -> [TC, WT, ET] (msd scheme, our own numpy/torch code, float32 0/1)",
                     "Spacingd(keys=[image,label], pixdim=<case pixdim>, mode=(bilinear, nearest))",
                     "Orientationd(keys=[image,label], axcodes=RAS)",
                     "NormalizeIntensityd(keys=image, nonzero=True, channel_wise=True)"],
        "cases": {},
    }
    manifest["seed"] = args.seed
    for case in CASES:
        if args.random_geometry:
            case = random_geometry(case, rng)
        manifest["cases"][case["name"]] = static_case(case, rng)
    if not args.static_only:
        manifest["unet"] = unet_fixtures()
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name, e in manifest["cases"].items():
        print(name, e["loaded"]["image_shape"], "->", e["spacing"]["output_shape"], "->",
              e["final"]["output_shape"], "resampled:", e["spacing"]["resampled"],
              "corner0:", e["spacing"]["voxel0_maps_to_input_voxel0"],
              "nibabel==loaded:", e["loaded"]["affine_equals_nibabel"],
              "norm-recompute:", e["final"]["matches_torch_scalar_recompute_bitwise"])
    for name, e in manifest.get("unet", {"configs": {}})["configs"].items():
        print(name, e["num_parameters"], e["num_state_dict_tensors"])


if __name__ == "__main__":
    main()
