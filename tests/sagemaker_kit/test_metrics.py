"""The metric definitions against what medseg prints: SageMaker matches each regex against every
log line and takes the first group as the value (Python's `re` is close to its semantics)."""

import json
import re
import tempfile
import unittest
from pathlib import Path

import support
from support import BUCKET, COMMON
from test_train import hyperparameter_args

# A training run small enough for a second of CPU, yet with validation every epoch.
TINY = ["epochs=2", "roi_size=[16,16,16]", "channels=[4,8]", "strides=[2]", "num_res_units=0",
        "batch_size=1", "validation_fraction=0.34", "log_interval=1", "device=cpu", "amp=off"]
METRIC_LINE = re.compile(r"^([a-z_]+)=(-?[0-9.eE+-]+)$")


def captures(definitions, line):
    """Metric name -> the value SageMaker takes from `line`, for every definition that matches."""
    found = {}
    for definition in definitions:
        match = re.search(definition["Regex"], line)
        if match:
            found[definition["Name"]] = match.group(1)
    return found


class MetricDefinitions(unittest.TestCase):
    def setUp(self):
        self.definitions = support.metric_definitions_file()

    def test_example_lines_are_captured_exactly(self):
        self.assertEqual(captures(self.definitions, "val_mean_dice=0.000012"),
                         {"val_mean_dice": "0.000012"})
        self.assertEqual(captures(self.definitions, "train_loss=0.53125"), {"train_loss": "0.53125"})
        self.assertEqual(captures(self.definitions, "epoch=12"), {"epoch": "12"})

    def test_names_are_unique_and_within_sagemaker_s_limit(self):
        names = [d["Name"] for d in self.definitions]
        self.assertEqual(len(names), len(set(names)))
        self.assertLessEqual(len(names), 40)

    def test_the_file_is_what_medseg_prints(self):
        with tempfile.TemporaryDirectory() as ml_root:
            result = support.run_medseg(["metric-definitions"], ml_root)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), self.definitions)


class MetricsOfATrainingRun(unittest.TestCase):
    """A real (tiny) medseg training run from a train.py request: every metric line it prints
    is captured exactly by its own definition and by no other."""

    @classmethod
    def setUpClass(cls):
        calls = support.dry_run("train.py", *COMMON, "--bucket", BUCKET, "--command", "train",
                                *hyperparameter_args(TINY))
        request = support.only_call(calls, "CreateTrainingJob")
        cls.definitions = request["AlgorithmSpecification"]["MetricDefinitions"]
        with tempfile.TemporaryDirectory() as tmp:
            cls.result = cls.train_as_sagemaker_would(request, Path(tmp))
        cls.lines = (cls.result.stdout + cls.result.stderr).splitlines()

    @staticmethod
    def train_as_sagemaker_would(request, ml_root):
        """Lay out the ML root from the request (the train channel from `medseg synth`) and run
        `medseg train`, the command SageMaker gives a training container."""
        config = ml_root / "input" / "config"
        support.write_json(config / "hyperparameters.json", request["HyperParameters"])
        support.write_json(config / "inputdataconfig.json", {
            c["ChannelName"]: {"TrainingInputMode": c.get("InputMode", "File"),
                               "S3DistributionType": c["DataSource"]["S3DataSource"]["S3DataDistributionType"],
                               "RecordWrapperType": "None"}
            for c in request["InputDataConfig"]})
        support.write_json(config / "resourceconfig.json", {
            "current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
        synth = support.run_medseg(["synth", "--out", str(ml_root / "input" / "data" / "train"),
                                    "--cases", "3", "--shape", "32", "32", "32"], ml_root)
        assert synth.returncode == 0, synth.stderr
        return support.run_medseg(["train"], ml_root)

    def test_training_succeeds(self):
        self.assertEqual(self.result.returncode, 0, self.result.stderr[-3000:])

    def test_each_metric_line_is_captured_by_its_definition_only(self):
        metric_lines = [line for line in self.lines if METRIC_LINE.match(line)]
        self.assertTrue(metric_lines, "medseg printed no name=value metric line")
        for line in metric_lines:
            name, value = METRIC_LINE.match(line).groups()
            self.assertEqual(captures(self.definitions, line), {name: value}, line)

    def test_objective_and_loss_are_reported(self):
        names = {METRIC_LINE.match(line).group(1) for line in self.lines if METRIC_LINE.match(line)}
        self.assertLessEqual({"val_mean_dice", "train_loss", "epoch"}, names)

    def test_no_other_line_feeds_a_metric(self):
        # Start-up lines print the configuration (e.g. "learning_rate: 0.0001"): no value there.
        for line in self.lines:
            if not METRIC_LINE.match(line):
                self.assertEqual(captures(self.definitions, line), {}, line)


if __name__ == "__main__":
    unittest.main()
