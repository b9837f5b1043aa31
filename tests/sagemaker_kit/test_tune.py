"""tune.py: the CreateHyperParameterTuningJob request its dry run prints."""

import unittest

import support
from support import BUCKET, COMMON, IMAGE, ROLE
from test_train import CHECKPOINT_S3, assert_medseg_reads, hyperparameter_args


class TuningJob(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.calls = support.dry_run(
            "tune.py", *COMMON, "--bucket", BUCKET, "--spot", "--checkpoint-s3", CHECKPOINT_S3,
            "--input-mode", "FastFile", "--max-jobs", "12", "--max-parallel-jobs", "3",
            # learning_rate is tuned, so its static value must not reach the request.
            *hyperparameter_args(["epochs=100", "amp=bf16", "resume=false", "learning_rate=0.5"]))
        cls.request = support.only_call(cls.calls, "CreateHyperParameterTuningJob")
        cls.config = cls.request["HyperParameterTuningJobConfig"]
        cls.definition = cls.request["TrainingJobDefinition"]

    def test_only_sagemaker_is_called(self):
        self.assertEqual({call["service"] for call in self.calls}, {"sagemaker"})

    def test_objective_is_val_mean_dice_maximized(self):
        self.assertEqual(self.config["HyperParameterTuningJobObjective"],
                         {"Type": "Maximize", "MetricName": "val_mean_dice"})

    def test_objective_is_among_medseg_s_metric_definitions(self):
        definitions = self.definition["AlgorithmSpecification"]["MetricDefinitions"]
        self.assertEqual(definitions, support.metric_definitions_file())
        self.assertIn("val_mean_dice", [d["Name"] for d in definitions])

    def test_limits(self):
        self.assertEqual(self.config["ResourceLimits"]["MaxNumberOfTrainingJobs"], 12)
        self.assertEqual(self.config["ResourceLimits"]["MaxParallelTrainingJobs"], 3)

    def test_ranges(self):
        ranges = self.config["ParameterRanges"]
        continuous = {r["Name"]: r for r in ranges["ContinuousParameterRanges"]}
        self.assertEqual(float(continuous["learning_rate"]["MinValue"]), 1e-5)
        self.assertEqual(float(continuous["learning_rate"]["MaxValue"]), 1e-3)
        self.assertEqual(continuous["learning_rate"]["ScalingType"], "Logarithmic")
        categorical = {r["Name"]: r["Values"] for r in ranges["CategoricalParameterRanges"]}
        self.assertEqual(categorical["batch_size"], ["1", "2", "4"])
        self.assertIn("adamw", categorical["optimizer"])

    def test_static_hyperparameters_leave_out_tuned_keys(self):
        static = self.definition["StaticHyperParameters"]
        self.assertEqual(set(static), {"epochs", "amp", "resume"})
        # The SDKs write booleans differently ("False" or "false"): medseg reads both, below.
        self.assertEqual((static["epochs"], static["amp"]), ("100", "bf16"))

    def test_training_jobs(self):
        self.assertEqual(self.definition["AlgorithmSpecification"]["TrainingImage"], IMAGE)
        self.assertEqual(self.definition["RoleArn"], ROLE)
        self.assertIs(self.definition["EnableManagedSpotTraining"], True)
        self.assertGreaterEqual(self.definition["StoppingCondition"]["MaxWaitTimeInSeconds"],
                                self.definition["StoppingCondition"]["MaxRuntimeInSeconds"])
        self.assertEqual(self.definition["CheckpointConfig"]["S3Uri"], CHECKPOINT_S3)
        modes = support.effective_input_modes(self.definition["AlgorithmSpecification"],
                                              self.definition["InputDataConfig"])
        self.assertEqual(modes, {"train": "FastFile"})

    def test_medseg_reads_a_trial_s_hyperparameters(self):
        # A trial gets the static values, one value of each range (as strings) and the objective.
        ranges = self.config["ParameterRanges"]
        trial = dict(self.definition["StaticHyperParameters"])
        for r in ranges["ContinuousParameterRanges"]:
            trial[r["Name"]] = r["MinValue"]
        for r in ranges["CategoricalParameterRanges"]:
            trial[r["Name"]] = r["Values"][-1]
        trial["_tuning_objective_metric"] = "val_mean_dice"
        assert_medseg_reads(self, trial, {"epochs": 100, "amp": "bf16", "resume": False,
                                          "learning_rate": 1e-5, "weight_decay": 1e-6,
                                          "batch_size": 4, "optimizer": "adamw"})


if __name__ == "__main__":
    unittest.main()
