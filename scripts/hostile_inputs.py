#!/usr/bin/env python3
"""Hostile input against the built binary, as a user or an attacker would send it.

Each variant builds a small SageMaker-style ML root (synthetic Decathlon cases from `medseg synth`)
with one thing broken, runs `medseg train` (or `infer`) on it, and records the exit code, the
peak memory and the first line of /opt/ml/output/failure. Prints a markdown table of family x
variant x outcome, then `hostile_<family>_<variant>=<exit code>` lines. A variant passes when
the job exits 2 (ClientError), its failure file names what the variant expects, and it stays under
the memory bound. Exits 1 if any variant fails.

    .venv/bin/python scripts/hostile_inputs.py [--medseg build/medseg] [--out /tmp/hostile]

Needs numpy and nibabel (the project's .venv has both).
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

import nibabel as nib
import numpy as np

SMALL = {"epochs": "1", "steps_per_epoch": "1", "batch_size": "1", "roi_size": "[32, 32, 16]",
         "channels": "[8, 16, 32, 64]", "strides": "[2, 2, 2]", "num_res_units": "1",
         "val_interval": "0", "num_threads": "2", "cache_dir": "memory"}
# The job fuzz/make_corpus.sh trained for the fuzz_checkpoint corpus: its checkpoints resume here.
CORPUS_JOB = {"epochs": "1", "steps_per_epoch": "2", "batch_size": "1", "roi_size": "[16, 16, 16]",
              "channels": "[4, 8]", "strides": "[2]", "num_res_units": "0", "val_interval": "0",
              "validation_fraction": "0", "checkpoint.every_steps": "1", "checkpoint.keep": "2",
              "num_threads": "1", "tensorboard_dir": "off"}
MEMORY_BOUND_MIB = 2048


def ml_root(args, name, hyperparameters, cases=2):
    root = os.path.join(args.out, name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "input", "config"))
    with open(os.path.join(root, "input", "config", "inputdataconfig.json"), "w") as f:
        json.dump({"train": {"TrainingInputMode": "File"}}, f)
    with open(os.path.join(root, "input", "config", "hyperparameters.json"), "w") as f:
        f.write(hyperparameters if isinstance(hyperparameters, str) else json.dumps(hyperparameters))
    data = os.path.join(root, "input", "data", "train")
    subprocess.run([args.medseg, "synth", "--out", data, "--cases", str(cases), "--shape", "48",
                    "48", "32", "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    return root


def first_image(root):
    folder = os.path.join(root, "input", "data", "train", "imagesTr")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def rewrite_case_affine(root, affine):
    """Gives the first case's image and label the same new affine."""
    labels = os.path.join(root, "input", "data", "train", "labelsTr")
    for path in (first_image(root), os.path.join(labels, sorted(os.listdir(labels))[0])):
        rewrite_nifti(path, lambda d, a, h: (d, affine))


def rewrite_nifti(path, change):
    """Loads path, lets change(data, affine, header) return (data, affine) and saves it back."""
    image = nib.load(path)
    data, affine = change(np.asarray(image.dataobj).astype(np.float32), image.affine.copy(),
                          image.header)
    out = nib.Nifti1Image(data, affine)
    out.set_sform(affine, code=1)
    out.set_qform(None, code=0)
    nib.save(out, path)


def run(args, root, command=("train",)):
    """Runs medseg; its exit code (minus the signal), the failure file, seconds and peak MiB."""
    started = time.monotonic()
    env = dict(os.environ, MEDSEG_ML_ROOT=root)
    process = subprocess.Popen([args.medseg, *command], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    code = process.returncode
    peak_mib = usage.ru_maxrss / 1024
    failure_path = os.path.join(root, "output", "failure")
    failure = open(failure_path, errors="replace").read() if os.path.exists(failure_path) else ""
    return code, failure, time.monotonic() - started, peak_mib


def variants(args):
    """(family, variant, expected words in the failure, set-up returning (root, command))."""
    def hyper(**extra):
        merged = dict(SMALL)
        merged.update(extra)
        return merged

    def deep_json():
        return ml_root(args, "deep_json", hyper(epochs="[" * 20000 + "]" * 20000)), ("train",)

    def lr_overflow():
        text = json.dumps(hyper()).replace('"val_interval"', '"learning_rate": 1e400, "val_interval"')
        return ml_root(args, "lr_overflow", text), ("train",)

    def null_hyperparameters():
        return ml_root(args, "null", "null"), ("train",)

    def huge_roi():
        return ml_root(args, "huge_roi", hyper(roi_size="[4096, 4096, 4096]")), ("train",)

    def huge_steps():
        return ml_root(args, "huge_steps", hyper(steps_per_epoch="2147483647")), ("train",)

    def huge_network():
        return ml_root(args, "huge_network",
                       hyper(channels="[4096, 4096, 4096, 4096]")), ("train",)

    def config_directory():
        return ml_root(args, "config_dir", hyper(config_file="/tmp")), ("train",)

    def config_dev_zero():
        return ml_root(args, "config_zero", hyper(config_file="/dev/zero")), ("train",)

    def huge_key():
        merged = hyper()
        merged["k" * 1_000_000] = "1"
        return ml_root(args, "huge_key", merged), ("train",)

    def rank2_sform():
        root = ml_root(args, "rank2_sform", hyper())
        affine = nib.load(first_image(root)).affine.copy()
        affine[:3, 2] = affine[:3, 0]  # two equal columns
        rewrite_case_affine(root, affine)
        return root, ("train",)

    def pixdim_tiny():
        root = ml_root(args, "pixdim_tiny", hyper())
        rewrite_case_affine(root, np.diag([1e-30, 1e-30, 1e-30, 1]))
        return root, ("train",)

    def pixdim_huge_resample():
        root = ml_root(args, "pixdim_resample", hyper())
        rewrite_case_affine(root, np.diag([50.0, 50.0, 50.0, 1]))
        return root, ("train",)

    def nan_voxels():
        root = ml_root(args, "nan_voxels", hyper())

        def change(data, affine, header):
            data[5, 5, 5, 0] = np.nan
            return data, affine
        rewrite_nifti(first_image(root), change)
        return root, ("train",)

    def gzip_without_trailer():
        root = ml_root(args, "gzip_trailer", hyper())
        path = first_image(root)
        data = open(path, "rb").read()
        open(path, "wb").write(data[:-8])
        return root, ("train",)

    def duplicate_case():
        root = ml_root(args, "duplicate_case", hyper(), cases=3)
        listing = os.path.join(root, "input", "data", "train", "dataset.json")
        dataset = json.load(open(listing))
        dataset["training"].append(dataset["training"][0])
        json.dump(dataset, open(listing, "w"))
        return root, ("train",)

    def label_seven():
        root = ml_root(args, "label_seven", hyper())
        folder = os.path.join(root, "input", "data", "train", "labelsTr")
        path = os.path.join(folder, sorted(os.listdir(folder))[0])

        def change(data, affine, header):
            data[3, 3, 3] = 7
            return data, affine
        rewrite_nifti(path, change)
        return root, ("train",)

    findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                            "fuzz_findings")
    corpus = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus")

    def framed_checkpoint(payload):
        """CheckpointStore's file layout (train/checkpoint_store.h) around payload, step 1."""
        import struct
        import zlib
        return (b"MEDSEGCK" + struct.pack("<IIQq", 1, zlib.crc32(payload), len(payload), 1) +
                payload + b"CKPTDONE" + struct.pack("<Q", len(payload)))

    def bad_checkpoint(name, payload, hyperparameters=None):
        def set_up():
            root = ml_root(args, name, hyperparameters or hyper())
            os.makedirs(os.path.join(root, "checkpoints"))
            with open(os.path.join(root, "checkpoints", "checkpoint-0000000001.ckpt"), "wb") as f:
                f.write(framed_checkpoint(payload))
            return root, ("train",)
        return set_up

    def found_checkpoint(file_name):
        # The fuzz corpus keeps the harness's inputs: byte 0 picks the road, then the payload.
        return open(os.path.join(corpus, "fuzz_checkpoint", file_name), "rb").read()[1:]

    def rng_beyond_its_storage():
        # A real checkpoint's payload whose 'rng/cpu' tensor claims 50,624 elements of its
        # 5,056-byte storage (what fuzz_checkpoint found in CI: the generator read past it).
        import io
        import zipfile
        payload = found_checkpoint("checkpoint-0000000001_payload")
        source = zipfile.ZipFile(io.BytesIO(payload))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as target:
            for info in source.infolist():
                data = source.read(info.filename)
                if info.filename.endswith("/data.pkl"):
                    at = data.index(b"rng/cpu")
                    size = data.index(b"(M\xc0\x13t", at)  # the size tuple (5056,)
                    data = data[:size] + b"(M\xc0\xc5t" + data[size + 5:]
                target.writestr(info, data)
        return out.getvalue()

    def bad_model(name, model_bytes):
        def set_up():
            root = ml_root(args, name, hyper())
            model = os.path.join(root, "input", "data", "model")
            os.makedirs(model)
            with open(os.path.join(model, "model.pth"), "wb") as f:
                f.write(model_bytes)
            with open(os.path.join(model, "medseg_config.yaml"), "w") as f:
                f.write("model:\n  channels: [4, 8]\n  strides: [2]\n  num_res_units: 0\n")
            return root, ("infer", "--model", model, "--input", first_image(root), "--output",
                          os.path.join(root, "out"), "--device", "cpu")
        return set_up

    def found_model(file_name):
        return open(os.path.join(findings, file_name), "rb").read()

    return [
        ("config", "hyperparameter nested 20,000 deep", ["epochs"], deep_json),
        ("config", "lr 1e400 (JSON overflow)", ["hyperparameters.json"], lr_overflow),
        ("config", "hyperparameters.json = null", ["hyperparameters.json"], null_hyperparameters),
        ("config", "roi_size [4096]x3", ["roi_size"], huge_roi),
        ("config", "steps_per_epoch 2147483647", ["steps_per_epoch"], huge_steps),
        ("config", "channels [4096]x4", ["model"], huge_network),
        ("config", "config_file = a directory", ["config_file"], config_directory),
        ("config", "config_file = /dev/zero", ["config_file"], config_dev_zero),
        ("config", "a 1 MB key", ["unknown key"], huge_key),
        ("NIfTI", "rank-2 sform", ["BRATS_001"], rank2_sform),
        ("NIfTI", "pixdim 1e-30", ["BRATS_001"], pixdim_tiny),
        ("NIfTI", "pixdim 50 (resampled to a huge grid)", ["max_case_mb"], pixdim_huge_resample),
        ("NIfTI", "a NaN voxel", ["imagesTr"], nan_voxels),
        ("NIfTI", ".nii.gz without its gzip trailer", ["imagesTr"], gzip_without_trailer),
        ("NIfTI", "label value 7", ["label value 7"], label_seven),
        ("data set", "a case listed twice", ["more than once"], duplicate_case),
        ("checkpoint", "CRC-valid, payload not a zip", ["checkpoint-0000000001.ckpt"],
         bad_checkpoint("ckpt_garbage", b"not a zip archive" * 100)),
        ("checkpoint", "CRC-valid, code naming an unknown type (fuzz finding)",
         ["checkpoint-0000000001.ckpt", "Unknown type name"],
         bad_checkpoint("ckpt_unknown_type", found_checkpoint("unknown_type_payload"))),
        ("checkpoint", "CRC-valid, a pickle claiming 1.6 GB (fuzz finding)",
         ["checkpoint-0000000001.ckpt", "not a valid pickle"],
         bad_checkpoint("ckpt_claims", found_checkpoint("pickle_claiming_1_6_gb_payload"))),
        ("checkpoint", "CRC-valid, the generator state larger than its storage (fuzz finding)",
         ["checkpoint-0000000001.ckpt", "rng/cpu"],
         bad_checkpoint("ckpt_rng_beyond", rng_beyond_its_storage(), CORPUS_JOB)),
        ("model", "model.pth cut before its zip directory (fuzz finding)",
         ["model.pth is not a PyTorch file"],
         bad_model("model_no_directory", found_model("model-without-end-of-central-directory.pth"))),
        ("model", "model.pth whose pickle claims 3 GB (fuzz finding)", ["not a valid pickle"],
         bad_model("model_claims", found_model("model-claiming-3-gb.pth"))),
        ("model", "model.pth whose zip entry claims 1.4 GB (fuzz finding)",
         ["more than the whole file"],
         bad_model("model_zip_claims", found_model("model-zip-entry-claiming-1-4-gb.pth"))),
        ("model", "model.pth with a UInt2 weight (fuzz finding)",
         ["expected floating-point weights"],
         bad_model("model_uint2", found_model("model-with-uint2-weights.pth"))),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medseg", default="build/medseg")
    parser.add_argument("--out", default="/tmp/hostile")
    args = parser.parse_args()
    args.medseg = os.path.abspath(args.medseg)
    os.makedirs(args.out, exist_ok=True)
    rows, failed = [], 0
    for family, variant, expected, set_up in variants(args):
        root, command = set_up()
        code, failure, seconds, peak_mib = run(args, root, command)
        first = failure.splitlines()[0] if failure else ""
        ok = (code == 2 and all(word in failure[:1024] for word in expected)
              and peak_mib < MEMORY_BOUND_MIB)
        failed += not ok
        cause = first[:150].replace("|", "/") + ("..." if len(first) > 150 else "")
        rows.append(f"| {family} | {variant} | exit {code}, {seconds:.1f} s, {peak_mib:.0f} MiB "
                    f"| {cause} | {'ok' if ok else 'FAILED'} |")
        slug = "".join(c if c.isalnum() else "_" for c in variant.lower()).strip("_")
        print(f"hostile_{family.lower().replace(' ', '_')}_{slug}={code}", file=sys.stderr)
    print("| family | variant | outcome | failure file (first line) | check |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"hostile_variants={len(rows)}")
    print(f"hostile_failed={failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
