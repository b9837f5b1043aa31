"""train.py: the CreateTrainingJob request its dry run prints, and what medseg makes of it."""

import tempfile
import unittest
from pathlib import Path

import support
from support import BUCKET, COMMON, IMAGE, ROLE

# What a user types, and what each value must mean to medseg.
HYPERPARAMETER_ARGS = ["epochs=300", "learning_rate=1e-4", "weight_decay=1e-5", "amp=bf16",
                       "resume=false", "roi_size=[128,128,64]", "pixdim=[1.5,1.5,2.0]",
                       "optimizer=adamw", "label_scheme=brats"]
MEANT = {"epochs": 300, "learning_rate": 1e-4, "weight_decay": 1e-5, "amp": "bf16",
         "resume": False, "roi_size": [128, 128, 64], "pixdim": [1.5, 1.5, 2.0],
         "optimizer": "adamw", "label_scheme": "brats"}
CHECKPOINT_S3 = f"s3://{BUCKET}/medseg/checkpoints/run-1"
VALIDATION_S3 = f"s3://{BUCKET}/medseg/data/validation"
MODEL_S3 = f"s3://{BUCKET}/medseg/output/job-1/output/model.tar.gz"


def hyperparameter_args(pairs):
    args = []
    for pair in pairs:
        args += ["--hyperparameter", pair]
    return args


def assert_same_value(test, actual, expected, what):
    """Equal and of the same type (True == 1 in Python, so types are compared too)."""
    test.assertEqual(type(actual), type(expected), f"{what}: {actual!r} vs {expected!r}")
    if isinstance(expected, list):
        test.assertEqual(len(actual), len(expected), what)
        for a, e in zip(actual, expected):
            assert_same_value(test, a, e, what)
    else:
        test.assertEqual(actual, expected, what)


def assert_medseg_reads(test, hyperparameters, meant):
    """medseg, given exactly these hyperparameters, resolves each key in `meant` to its value."""
    config = support.print_config(hyperparameters)
    names = support.config_keys()
    for key, expected in meant.items():
        section, leaf = names[key]
        assert_same_value(test, config[section][leaf], expected, f"{key} ({section}.{leaf})")


class SpotTrainingJob(unittest.TestCase):
    """Spot, checkpoints, FastFile, two instances, a validation channel, typed hyperparameters."""

    @classmethod
    def setUpClass(cls):
        cls.calls = support.dry_run(
            "train.py", *COMMON, "--bucket", BUCKET, "--validation-s3", VALIDATION_S3,
            "--instance-type", "ml.g5.12xlarge", "--instance-count", "2",
            "--input-mode", "FastFile", "--spot", "--max-run", "36000", "--max-wait", "72000",
            "--checkpoint-s3", CHECKPOINT_S3, "--command", "train",
            *hyperparameter_args(HYPERPARAMETER_ARGS))
        cls.request = support.only_call(cls.calls, "CreateTrainingJob")

    def test_only_sagemaker_is_called_once(self):
        self.assertEqual({call["service"] for call in self.calls}, {"sagemaker"})
        self.assertEqual(len(support.calls_of(self.calls, "CreateTrainingJob")), 1)

    def test_image_role_and_output(self):
        self.assertEqual(self.request["AlgorithmSpecification"]["TrainingImage"], IMAGE)
        self.assertEqual(self.request["RoleArn"], ROLE)
        self.assertEqual(self.request["OutputDataConfig"]["S3OutputPath"],
                         f"s3://{BUCKET}/medseg/output")

    def test_spot(self):
        self.assertIs(self.request["EnableManagedSpotTraining"], True)
        self.assertEqual(self.request["StoppingCondition"],
                         {"MaxRuntimeInSeconds": 36000, "MaxWaitTimeInSeconds": 72000})

    def test_checkpoints(self):
        self.assertEqual(self.request["CheckpointConfig"],
                         {"S3Uri": CHECKPOINT_S3, "LocalPath": "/opt/ml/checkpoints"})

    def test_metric_definitions_are_medseg_s(self):
        definitions = self.request["AlgorithmSpecification"]["MetricDefinitions"]
        self.assertEqual(definitions, support.metric_definitions_file())
        self.assertLessEqual(len(definitions), 40)
        self.assertIn("val_mean_dice", [d["Name"] for d in definitions])

    def test_channels_and_input_mode(self):
        channels = self.request["InputDataConfig"]
        self.assertEqual({c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in channels},
                         {"train": f"s3://{BUCKET}/medseg/data/train", "validation": VALIDATION_S3})
        modes = support.effective_input_modes(self.request["AlgorithmSpecification"], channels)
        self.assertEqual(set(modes.values()), {"FastFile"}, modes)

    def test_instances(self):
        resources = self.request["ResourceConfig"]
        self.assertEqual((resources["InstanceType"], resources["InstanceCount"]), ("ml.g5.12xlarge", 2))

    def test_hyperparameters_are_strings_of_each_key(self):
        hyperparameters = self.request["HyperParameters"]
        self.assertEqual(set(hyperparameters), set(MEANT) | {"command"})
        self.assertTrue(all(isinstance(v, str) for v in hyperparameters.values()), hyperparameters)
        self.assertEqual(hyperparameters["command"], "train")
        self.assertEqual(hyperparameters["amp"], "bf16")  # a plain string is not JSON-quoted

    def test_medseg_reads_each_hyperparameter_as_meant(self):
        # The request's map exactly as SageMaker writes it to hyperparameters.json (`command`
        # included: medseg must accept it next to the configuration keys).
        assert_medseg_reads(self, self.request["HyperParameters"], MEANT)


class InferenceJobOnDemandPipe(unittest.TestCase):
    """--command infer with channels `data` and `model`, Pipe mode, no Spot, no checkpoints."""

    @classmethod
    def setUpClass(cls):
        cls.calls = support.dry_run(
            "train.py", *COMMON, "--bucket", BUCKET, "--command", "infer",
            "--train-channel", "data", "--train-s3", f"s3://{BUCKET}/cases",
            "--model-s3", MODEL_S3, "--input-mode", "Pipe", "--distribution", "ShardedByS3Key")
        cls.request = support.only_call(cls.calls, "CreateTrainingJob")

    def test_no_spot_and_no_checkpoints(self):
        self.assertFalse(self.request.get("EnableManagedSpotTraining", False))
        self.assertNotIn("MaxWaitTimeInSeconds", self.request["StoppingCondition"])
        self.assertEqual(self.request["StoppingCondition"]["MaxRuntimeInSeconds"], 24 * 3600)
        self.assertNotIn("CheckpointConfig", self.request)

    def test_defaults(self):
        resources = self.request["ResourceConfig"]
        self.assertEqual((resources["InstanceType"], resources["InstanceCount"]), ("ml.g5.2xlarge", 1))

    def test_channels_pipe_and_sharded(self):
        channels = {c["ChannelName"]: c for c in self.request["InputDataConfig"]}
        self.assertEqual(set(channels), {"data", "model"})
        self.assertEqual(channels["model"]["DataSource"]["S3DataSource"]["S3Uri"], MODEL_S3)
        self.assertEqual(channels["data"]["DataSource"]["S3DataSource"]["S3DataDistributionType"],
                         "ShardedByS3Key")
        modes = support.effective_input_modes(self.request["AlgorithmSpecification"],
                                              self.request["InputDataConfig"])
        self.assertEqual(set(modes.values()), {"Pipe"}, modes)

    def test_medseg_started_without_arguments_runs_infer(self):
        # How SageMaker SDK v3 starts the image: no argument; the hyperparameter picks the command.
        # With no model in the ML root, infer stops with a client error about the model.
        with tempfile.TemporaryDirectory() as ml_root:
            support.write_json(Path(ml_root, "input", "config", "hyperparameters.json"),
                               self.request["HyperParameters"])
            result = support.run_medseg([], ml_root)
            failure = Path(ml_root, "output", "failure").read_text()
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("infer", result.stdout + result.stderr)
        self.assertIn("model", failure)


class CommandLine(unittest.TestCase):
    def test_the_other_sdk_is_refused(self):
        other = "v3" if support.SDK == "v2" else "v2"
        result = support.run_kit("train.py", *COMMON, "--bucket", BUCKET, "--dry-run", "--sdk", other)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"--sdk {other}", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_max_wait_below_max_run_is_refused(self):
        result = support.run_kit("train.py", *COMMON, "--bucket", BUCKET, "--dry-run", "--spot",
                                 "--max-run", "3600", "--max-wait", "1800")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--max-wait", result.stderr)

    def test_without_a_bucket_or_uris_it_says_what_is_missing(self):
        result = support.run_kit("train.py", *COMMON, "--dry-run")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("--bucket", result.stderr)


if __name__ == "__main__":
    unittest.main()
