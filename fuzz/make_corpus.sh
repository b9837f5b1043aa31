#!/usr/bin/env bash
# Writes the harnesses' seed corpus (fuzz/corpus/<harness>/) from real medseg outputs and small
# NIfTI files in every data type the reader supports; run once, the result is committed.
#   fuzz/make_corpus.sh [path/to/medseg]   (default build/medseg; needs .venv with nibabel)
set -euo pipefail
cd "$(dirname "$0")/.."
medseg="${1:-build/medseg}"
python=.venv/bin/python
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rm -rf fuzz/corpus && mkdir -p fuzz/corpus/fuzz_nifti fuzz/corpus/fuzz_records fuzz/corpus/fuzz_config \
  fuzz/corpus/fuzz_archive fuzz/corpus/fuzz_checkpoint fuzz/corpus/fuzz_model

# NIfTI: 3-D and 4-D, NIfTI-1 and -2, several data types, scaled, oblique; plain and gzipped.
"$python" - fuzz/corpus/fuzz_nifti <<'PY'
import sys, numpy as np, nibabel as nib
out = sys.argv[1]
rng = np.random.default_rng(0)
affine = np.diag([1.5, 1.5, 2.0, 1.0]); affine[:3, 3] = [-10, 5, 3]
oblique = affine.copy(); oblique[0, 1] = 0.3
for name, shape, dtype, image_class, aff in [
        ("t1_int16", (6, 5, 4), np.int16, nib.Nifti1Image, affine),
        ("four_float32", (5, 4, 3, 4), np.float32, nib.Nifti1Image, oblique),
        ("label_uint8", (6, 5, 4), np.uint8, nib.Nifti1Image, affine),
        ("n2_float64", (4, 4, 3), np.float64, nib.Nifti2Image, affine),
        ("four_int32", (3, 3, 2, 4), np.int32, nib.Nifti1Image, affine)]:
    data = (rng.random(shape) * 100).astype(dtype)
    image = image_class(data, aff)
    if name == "t1_int16":
        image.header.set_slope_inter(0.5, 3.0)
    nib.save(image, f"{out}/{name}.nii")
    nib.save(image, f"{out}/{name}.nii.gz")
PY

# Records: preprocess's shards of two tiny synthetic cases (float32 and float16), and both inside
# SageMaker's RecordIO framing (one whole frame; one object in two parts).
"$medseg" synth --out "$work/synth" --cases 2 --shape 8 8 8 --seed 3 >/dev/null
for dtype in float32 float16; do
  "$medseg" --ml-root "$work/ml" preprocess --input "$work/synth" --output "$work/records-$dtype" \
    --format records --no-split --set pixdim=2,2,2 --set preprocess.image_dtype=$dtype >/dev/null
  cat $(find "$work/records-$dtype" -name '*.medrec' | sort) > "fuzz/corpus/fuzz_records/shard_$dtype.medrec"
done
"$python" - fuzz/corpus/fuzz_records <<'PY'
import struct, sys
out = sys.argv[1]
payload = open(f"{out}/shard_float16.medrec", "rb").read()
def frame(flag, data):
    return struct.pack("<II", 0xced7230a, (flag << 29) | len(data)) + data + b"\0" * (-len(data) % 4)
open(f"{out}/recordio_whole.bin", "wb").write(frame(0, payload))
half = len(payload) // 2
open(f"{out}/recordio_parts.bin", "wb").write(frame(1, payload[:half]) + frame(3, payload[half:]))
PY

# Configuration: byte 0 picks the road (0 hyperparameters.json, 1 YAML, 2 one value).
cfg=fuzz/corpus/fuzz_config
printf '\x00{"lr": "1e-4", "epochs": "3", "roi_size": "[64, 64, 32]", "amp": "bf16", "train.deterministic": "True"}' > $cfg/hyperparameters_sdk.json
printf '\x00{"optim.lr": 0.001, "model.channels": [16, 32, 64], "sagemaker_program": "x", "data.label_scheme": "brats"}' > $cfg/hyperparameters_typed.json
printf '\x00{"augment.roi_size": "(48, 48, 32)", "train.max_steps": "None", "model.dropout": "0.1"}' > $cfg/hyperparameters_python.json
{ printf '\x01'; cat config/brats_unet.yaml; } > $cfg/brats_unet.yaml
printf '\x01train:\n  epochs: 2\n  amp: off\naugment:\n  roi_size: [32, 32, 16]\n' > $cfg/small.yaml
printf '\x02[1, 2.5, "a", True, None, (3, 4)]' > $cfg/value_list
printf "\x02{'a': 1e-5, 'b': [False]}" > $cfg/value_dict
# Archives: a BraTS case folder as serve takes it (plain and gzipped), a model.tar.gz, and the
# members that must be refused (a symbolic link, a '..' name, a FIFO).
python3 - fuzz/corpus/fuzz_archive <<'PY'
import io, sys, tarfile
out = sys.argv[1]
def member(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mtime = kind, len(data), link, 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
for name, mode in [("case.tar", "w"), ("case.tar.gz", "w:gz")]:
    with tarfile.open(f"{out}/{name}", mode, format=tarfile.GNU_FORMAT) as tar:
        member(tar, "BraTS_001/", kind=tarfile.DIRTYPE)
        for modality in ("flair", "t1", "t1ce", "t2"):
            member(tar, f"BraTS_001/BraTS_001_{modality}.nii.gz", b"\x1f\x8b" + b"x" * 30)
with tarfile.open(f"{out}/model.tar.gz", "w:gz", format=tarfile.GNU_FORMAT) as tar:
    member(tar, "model.pth", b"PK\x03\x04" + b"w" * 60)
    member(tar, "medseg_config.yaml", b"model:\n  channels: [16, 32]\n")
with tarfile.open(f"{out}/refused.tar", "w", format=tarfile.GNU_FORMAT) as tar:
    member(tar, "model.pth", kind=tarfile.SYMTYPE, link="/etc/passwd")
    member(tar, "../escape", b"x")
    member(tar, "fifo", kind=tarfile.FIFOTYPE)
PY

# Checkpoints and model.pth files of the harnesses' network (channels [4, 8], strides [2], no
# residual units), from a real two-step training job; byte 0 of a checkpoint input picks the road
# (0 whole file, 1 payload only), and MONAI's own torch.save of a state dict joins the models.
"$medseg" synth --out "$work/tiny/input/data/train" --cases 3 --shape 16 16 16 --seed 4 >/dev/null
mkdir -p "$work/tiny/input/config"
echo '{"train": {"TrainingInputMode": "File"}}' > "$work/tiny/input/config/inputdataconfig.json"
cat > "$work/tiny/input/config/hyperparameters.json" <<'JSON'
{"epochs": "1", "steps_per_epoch": "2", "batch_size": "1", "roi_size": "[16, 16, 16]",
 "channels": "[4, 8]", "strides": "[2]", "num_res_units": "0", "val_interval": "0",
 "validation_fraction": "0", "checkpoint.every_steps": "1", "checkpoint.keep": "2",
 "num_threads": "1", "tensorboard_dir": "off"}
JSON
MEDSEG_ML_ROOT="$work/tiny" "$medseg" train >/dev/null
for checkpoint in "$work"/tiny/checkpoints/checkpoint-*.ckpt; do
  name="$(basename "$checkpoint" .ckpt)"
  { printf '\x00'; cat "$checkpoint"; } > "fuzz/corpus/fuzz_checkpoint/${name}_file"
  size="$(stat -c %s "$checkpoint")"
  { printf '\x01'; head -c $((size - 16)) "$checkpoint" | tail -c +33; } \
    > "fuzz/corpus/fuzz_checkpoint/${name}_payload"
done
cp "$work/tiny/model/model.pth" fuzz/corpus/fuzz_model/medseg_model.pth
"$python" - fuzz/corpus/fuzz_model <<'PY'
import sys, torch
from monai.networks.nets import UNet
torch.manual_seed(0)
net = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(4, 8), strides=(2,),
           num_res_units=0)
torch.save(net.state_dict(), f"{sys.argv[1]}/monai_state_dict.pth")
PY
ls fuzz/corpus/*/ | head -60
