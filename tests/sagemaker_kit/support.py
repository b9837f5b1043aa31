"""Helpers of the launch-kit tests: run a kit script's dry run, run medseg on a request's values.

The tests run in a virtual environment holding one SageMaker SDK (scripts/sagemaker/test_kit.sh
makes one per major version); SDK is the one installed. The scripts run as a user runs them, in
a subprocess, with no AWS configuration and with the network forbidden (no_network/).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KIT_DIR = ROOT / "scripts" / "sagemaker"
MEDSEG = Path(os.environ.get("MEDSEG_BINARY", ROOT / "build" / "medseg"))

sys.path.insert(0, str(KIT_DIR))
import kit  # noqa: E402  (the kit's own helpers, for the values they define)

SDK = kit.installed_sdk_major()
NETWORK_EXIT_CODE = 86  # no_network/sitecustomize.py

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/medseg:test"
ROLE = "arn:aws:iam::123456789012:role/MedsegSageMaker"
BUCKET = "medseg-kit-test"
COMMON = ["--image", IMAGE, "--role", ROLE, "--region", "eu-west-1"]


def offline_env(**extra):
    """The environment of a kit script under test: no AWS settings from this machine, network
    use fatal, and any AWS endpoint an address where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_ENDPOINT_URL="http://127.0.0.1:9", PYTHONPATH=str(HERE / "no_network"))
    env.update(extra)
    return env


def run_kit(script, *args):
    """Run scripts/sagemaker/<script> with args; the CompletedProcess (text)."""
    return subprocess.run([sys.executable, str(KIT_DIR / script), *args], capture_output=True,
                          text=True, env=offline_env(), timeout=300)


def dry_run(script, *args):
    """The AWS calls a script's --dry-run prints (a list of {service, operation, params})."""
    result = run_kit(script, *args, "--dry-run", "--sdk", SDK)
    if result.returncode != 0:
        raise AssertionError(f"{script} --dry-run exited {result.returncode}:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout)


def calls_of(calls, operation):
    return [call["params"] for call in calls if call["operation"] == operation]


def only_call(calls, operation):
    """The params of the one call of `operation`."""
    found = calls_of(calls, operation)
    if len(found) != 1:
        raise AssertionError(f"expected one {operation}, got {len(found)} in "
                             f"{[call['operation'] for call in calls]}")
    return found[0]


def metric_definitions_file():
    return json.loads(kit.METRIC_DEFINITIONS_FILE.read_text())


def effective_input_modes(algorithm_specification, channels):
    """Channel name -> the input mode SageMaker uses (the channel's own, else the job's)."""
    default = algorithm_specification["TrainingInputMode"]
    return {c["ChannelName"]: c.get("InputMode", default) for c in channels}


# ---------------------------------------------------------------------------------------------
# medseg


def run_medseg(args, ml_root, timeout=120):
    """Run the medseg binary with MEDSEG_ML_ROOT=ml_root; the CompletedProcess (text)."""
    if not os.access(MEDSEG, os.X_OK):
        raise AssertionError(f"no medseg binary at {MEDSEG} (set MEDSEG_BINARY)")
    env = dict(os.environ, MEDSEG_ML_ROOT=str(ml_root))
    return subprocess.run([str(MEDSEG), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def print_config(hyperparameters):
    """medseg's resolved configuration for a hyperparameters.json holding exactly `hyperparameters`
    (as SageMaker writes the request's map): `medseg train --print-config`, parsed."""
    with tempfile.TemporaryDirectory() as ml_root:
        write_json(Path(ml_root, "input", "config", "hyperparameters.json"), hyperparameters)
        result = run_medseg(["train", "--print-config"], ml_root)
    if result.returncode != 0:
        raise AssertionError(f"medseg train --print-config exited {result.returncode} for "
                             f"{hyperparameters}:\n{result.stderr}")
    return parse_print_config(result.stdout)


def parse_print_config(text):
    """medseg's --print-config YAML (sections of `key: value  # from ...` lines) -> nested dict."""
    config, section = {}, None
    for line in text.splitlines():
        line = line.split("  #", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith(" "):
            section = config.setdefault(line.rstrip(":"), {})
            continue
        key, _, value = line.strip().partition(":")
        section[key] = parse_yaml_scalar(value.strip())
    return config


def parse_yaml_scalar(text):
    """A flow list, true/false, a quoted string, an int, a float or a plain string."""
    if text.startswith("[") and text.endswith("]"):
        return [parse_yaml_scalar(item.strip()) for item in text[1:-1].split(",") if item.strip()]
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"'):
        return json.loads(text)
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text


def config_keys():
    """Every name a hyperparameter may use (dotted key or alias) -> (section, leaf), from
    `medseg train --list-config`."""
    with tempfile.TemporaryDirectory() as ml_root:
        result = run_medseg(["train", "--list-config"], ml_root)
    if result.returncode != 0:
        raise AssertionError(f"medseg train --list-config failed:\n{result.stderr}")
    names = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"`[a-z_]+\.[a-z_]+`", cells[0]):
            continue
        dotted = cells[0].strip("`")
        place = tuple(dotted.split("."))
        names[dotted] = place
        for alias in re.findall(r"`([^`]+)`", cells[1]):
            names[alias] = place
    return names
