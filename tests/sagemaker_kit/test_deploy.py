"""deploy.py: the requests of a real-time endpoint, an asynchronous endpoint and a Batch Transform."""

import unittest

import support
from support import BUCKET, COMMON, IMAGE, ROLE

MODEL_DATA = f"s3://{BUCKET}/medseg/output/medseg-job-1/output/model.tar.gz"
NAME = "medseg-kit-test"
SERVED = ("CreateModel", "CreateEndpointConfig", "CreateEndpoint")


def deploy(mode, *args):
    return support.dry_run("deploy.py", mode, *COMMON, "--model-data", MODEL_DATA, "--name", NAME,
                           "--instance-type", "ml.g5.xlarge", *args)


class ModelChecks:
    """Every mode creates the model: the image (SageMaker runs it with `serve`) and model.tar.gz."""

    def test_only_sagemaker_is_called(self):
        self.assertEqual({call["service"] for call in self.calls}, {"sagemaker"})

    def test_model(self):
        model = support.only_call(self.calls, "CreateModel")
        self.assertEqual(model["ModelName"], NAME)
        self.assertEqual(model["ExecutionRoleArn"], ROLE)
        self.assertEqual(model["PrimaryContainer"]["Image"], IMAGE)
        self.assertEqual(model["PrimaryContainer"]["ModelDataUrl"], MODEL_DATA)

    def create_operations(self):
        return [call["operation"] for call in self.calls if call["operation"].startswith("Create")]


class RealTimeEndpoint(ModelChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.calls = deploy("realtime", "--instance-count", "2")

    def test_model_then_config_then_endpoint(self):
        self.assertEqual(self.create_operations(), list(SERVED))

    def test_endpoint_config(self):
        config = support.only_call(self.calls, "CreateEndpointConfig")
        (variant,) = config["ProductionVariants"]
        self.assertEqual((variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]),
                         (NAME, "ml.g5.xlarge", 2))
        self.assertNotIn("AsyncInferenceConfig", config)
        endpoint = support.only_call(self.calls, "CreateEndpoint")
        self.assertEqual((endpoint["EndpointName"], endpoint["EndpointConfigName"]),
                         (NAME, config["EndpointConfigName"]))


class AsyncEndpoint(ModelChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.calls = deploy("async", "--bucket", BUCKET, "--max-concurrent-invocations", "2")

    def test_model_then_config_then_endpoint(self):
        self.assertEqual(self.create_operations(), list(SERVED))

    def test_async_inference_config(self):
        config = support.only_call(self.calls, "CreateEndpointConfig")["AsyncInferenceConfig"]
        self.assertEqual(config["OutputConfig"]["S3OutputPath"], f"s3://{BUCKET}/medseg/async-output")
        self.assertTrue(config["OutputConfig"]["S3FailurePath"].startswith("s3://"))
        self.assertEqual(config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"], 2)

    def test_serve_accepts_asynchronous_payloads(self):
        # medseg serve refuses bodies over SAGEMAKER_MAX_PAYLOAD_IN_MB (default 6, real-time's).
        model = support.only_call(self.calls, "CreateModel")
        self.assertEqual(model["PrimaryContainer"]["Environment"]["SAGEMAKER_MAX_PAYLOAD_IN_MB"],
                         "1024")


class BatchTransform(ModelChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.calls = deploy("batch", "--input-s3", f"s3://{BUCKET}/cases/",
                           "--output-s3", f"s3://{BUCKET}/labels/")

    def test_model_then_transform_job_and_no_endpoint(self):
        self.assertEqual(self.create_operations(), ["CreateModel", "CreateTransformJob"])

    def test_transform_job(self):
        job = support.only_call(self.calls, "CreateTransformJob")
        self.assertEqual(job["ModelName"], NAME)
        self.assertEqual(job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"],
                         f"s3://{BUCKET}/cases/")
        self.assertEqual(job["TransformInput"]["ContentType"], "application/octet-stream")
        self.assertEqual(job["TransformOutput"]["S3OutputPath"], f"s3://{BUCKET}/labels/")
        self.assertEqual(job["BatchStrategy"], "SingleRecord")  # one NIfTI volume per request
        self.assertEqual(job["MaxPayloadInMB"], 100)
        self.assertEqual(job["TransformResources"]["InstanceType"], "ml.g5.xlarge")


class CommandLine(unittest.TestCase):
    def test_batch_needs_its_input(self):
        result = support.run_kit("deploy.py", "batch", *COMMON, "--model-data", MODEL_DATA,
                                 "--bucket", BUCKET, "--dry-run")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--input-s3", result.stderr)


if __name__ == "__main__":
    unittest.main()
