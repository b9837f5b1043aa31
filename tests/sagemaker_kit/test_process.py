"""process.py: the CreateProcessingJob request its dry run prints."""

import unittest

import support
from support import BUCKET, COMMON, IMAGE, ROLE

INPUT_S3 = f"s3://{BUCKET}/raw/BraTS2021"
OUTPUT_S3 = f"s3://{BUCKET}/medseg/records"


class ShardedProcessingJob(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.calls = support.dry_run(
            "process.py", *COMMON, "--input-s3", INPUT_S3, "--output-s3", OUTPUT_S3,
            "--distribution", "ShardedByS3Key", "--instance-count", "4",
            "--set", "pixdim=1.5,1.5,2.0")
        cls.request = support.only_call(cls.calls, "CreateProcessingJob")

    def test_only_sagemaker_is_called(self):
        self.assertEqual({call["service"] for call in self.calls}, {"sagemaker"})

    def test_image_and_role(self):
        self.assertEqual(self.request["AppSpecification"]["ImageUri"], IMAGE)
        self.assertEqual(self.request["RoleArn"], ROLE)

    def test_the_image_s_entrypoint_runs_preprocess_with_the_settings(self):
        app = self.request["AppSpecification"]
        self.assertNotIn("ContainerEntrypoint", app)  # the image's ENTRYPOINT: medseg
        self.assertEqual(app["ContainerArguments"], ["preprocess", "--set", "pixdim=1.5,1.5,2.0"])

    def test_input_is_sharded_into_medseg_s_input_folder(self):
        (processing_input,) = self.request["ProcessingInputs"]
        s3_input = processing_input["S3Input"]
        self.assertEqual(processing_input["InputName"], "data")
        self.assertEqual(s3_input["S3Uri"], INPUT_S3)
        self.assertEqual(s3_input["LocalPath"], "/opt/ml/processing/input/data")
        self.assertEqual(s3_input["S3DataDistributionType"], "ShardedByS3Key")

    def test_output_from_medseg_s_output_folder(self):
        (output,) = self.request["ProcessingOutputConfig"]["Outputs"]
        self.assertEqual(output["OutputName"], "data")
        self.assertEqual(output["S3Output"]["S3Uri"], OUTPUT_S3)
        self.assertEqual(output["S3Output"]["LocalPath"], "/opt/ml/processing/output/data")

    def test_several_instances(self):
        self.assertEqual(self.request["ProcessingResources"]["ClusterConfig"]["InstanceCount"], 4)


class DefaultProcessingJob(unittest.TestCase):
    """No settings: the container starts with no argument (medseg then runs preprocess)."""

    @classmethod
    def setUpClass(cls):
        cls.request = support.only_call(
            support.dry_run("process.py", *COMMON, "--bucket", BUCKET), "CreateProcessingJob")

    def test_no_entrypoint_and_no_arguments(self):
        self.assertEqual(set(self.request["AppSpecification"]), {"ImageUri"})

    def test_fully_replicated_input_and_bucket_defaults(self):
        s3_input = self.request["ProcessingInputs"][0]["S3Input"]
        self.assertEqual(s3_input["S3DataDistributionType"], "FullyReplicated")
        self.assertEqual(s3_input["S3Uri"], f"s3://{BUCKET}/medseg/data/raw")
        self.assertEqual(self.request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"],
                         f"s3://{BUCKET}/medseg/data/train")


if __name__ == "__main__":
    unittest.main()
