#!/usr/bin/env python3
"""Host a trained medseg model: a real-time endpoint, an asynchronous endpoint or a Batch Transform.

SageMaker hosting runs `docker run IMAGE serve`: medseg serves HTTP on port 8080 (POST
/invocations takes a NIfTI image and returns its label map). --model-data is the training job's
model.tar.gz: <output S3 prefix>/<training job name>/output/model.tar.gz.

  python scripts/sagemaker/deploy.py realtime --image URI --role ARN --model-data s3://.../model.tar.gz
  python scripts/sagemaker/deploy.py async    --image URI --role ARN --model-data ... --bucket B
  python scripts/sagemaker/deploy.py batch    --image URI --role ARN --model-data ... \\
      --input-s3 s3://B/cases/ --output-s3 s3://B/labels/

Real-time requests are limited to 6 MB (a compressed BraTS volume is about that), asynchronous
ones to 1 GB, Batch Transform records to --max-payload MB. SDK v2 uses sagemaker.model.Model;
SDK v3 has no deploy path for a bring-your-own serving image (ModelBuilder expects one of its
model servers), so it uses v3's resource classes (sagemaker.core.resources Model, EndpointConfig,
Endpoint) and sagemaker.core.transformer.Transformer. --dry-run prints the CreateModel,
CreateEndpointConfig, CreateEndpoint or CreateTransformJob requests as JSON and calls no AWS
service.
"""

import argparse
import sys

import kit

NIFTI_CONTENT_TYPE = "application/octet-stream"  # a .nii or .nii.gz body
ASYNC_MAX_PAYLOAD_MB = 1024  # asynchronous inference's limit; medseg serve defaults to 6 MB


def model_environment(args):
    """medseg serve's payload limit: Batch Transform sets it itself; asynchronous endpoints need it."""
    return {"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(ASYNC_MAX_PAYLOAD_MB)} if args.mode == "async" else {}
DEFAULT_HOSTING_INSTANCE_TYPE = "ml.g5.xlarge"


def deploy_v2(args, session):
    from sagemaker.async_inference import AsyncInferenceConfig
    from sagemaker.model import Model

    model = Model(image_uri=args.image, model_data=args.model_data, role=args.role,
                  name=args.name, env=model_environment(args), sagemaker_session=session)
    if args.mode == "batch":
        transformer = model.transformer(
            instance_count=args.instance_count, instance_type=args.instance_type,
            strategy="SingleRecord", output_path=args.output_s3, accept=NIFTI_CONTENT_TYPE,
            max_payload=args.max_payload)
        transformer.transform(args.input_s3, data_type="S3Prefix", content_type=NIFTI_CONTENT_TYPE,
                              split_type="None", job_name=args.name, wait=args.wait, logs=args.wait)
        return
    async_config = None
    if args.mode == "async":
        async_config = AsyncInferenceConfig(
            output_path=args.output_s3, failure_path=args.failure_s3,
            max_concurrent_invocations_per_instance=args.max_concurrent_invocations)
    model.deploy(initial_instance_count=args.instance_count, instance_type=args.instance_type,
                 endpoint_name=args.name, async_inference_config=async_config, wait=args.wait)


def deploy_v3(args, session):
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import (AsyncInferenceClientConfig, AsyncInferenceConfig,
                                       AsyncInferenceOutputConfig, ContainerDefinition,
                                       ProductionVariant)

    where = dict(session=session.boto_session, region=session.boto_region_name)
    Model.create(model_name=args.name, execution_role_arn=args.role,
                 primary_container=ContainerDefinition(image=args.image,
                                                       model_data_url=args.model_data,
                                                       environment=model_environment(args)),
                 **where)
    if args.mode == "batch":
        from sagemaker.core.transformer import Transformer

        transformer = Transformer(
            model_name=args.name, instance_count=args.instance_count,
            instance_type=args.instance_type, strategy="SingleRecord", output_path=args.output_s3,
            accept=NIFTI_CONTENT_TYPE, max_payload=args.max_payload, sagemaker_session=session)
        transformer.transform(args.input_s3, data_type="S3Prefix", content_type=NIFTI_CONTENT_TYPE,
                              split_type="None", job_name=args.name, wait=args.wait, logs=args.wait)
        return
    config = {}
    if args.mode == "async":
        config["async_inference_config"] = AsyncInferenceConfig(
            output_config=AsyncInferenceOutputConfig(s3_output_path=args.output_s3,
                                                     s3_failure_path=args.failure_s3),
            client_config=AsyncInferenceClientConfig(
                max_concurrent_invocations_per_instance=args.max_concurrent_invocations))
    EndpointConfig.create(
        endpoint_config_name=args.name,
        production_variants=[ProductionVariant(
            variant_name="AllTraffic", model_name=args.name,
            initial_instance_count=args.instance_count, instance_type=args.instance_type)],
        **config, **where)
    endpoint = Endpoint.create(endpoint_name=args.name, endpoint_config_name=args.name, **where)
    if args.wait:
        endpoint.wait_for_status("InService")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["realtime", "async", "batch"])
    kit.add_common_arguments(parser)
    parser.add_argument("--image", required=True, help="medseg image URI in ECR")
    parser.add_argument("--model-data", required=True, help="the training job's model.tar.gz S3 URI")
    parser.add_argument("--name", help="model, endpoint (config) and transform job name "
                                       "(default medseg-<time>)")
    parser.add_argument("--instance-type", default=DEFAULT_HOSTING_INSTANCE_TYPE)
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--bucket", help="S3 bucket for the default output URI")
    parser.add_argument("--output-s3", help="async results or batch output "
                                            "(default s3://BUCKET/medseg/<async|batch>-output)")
    parser.add_argument("--failure-s3", help="async: error responses (default OUTPUT_S3/failures)")
    parser.add_argument("--input-s3", help="batch: the NIfTI images to segment")
    parser.add_argument("--max-payload", type=int, default=100, help="batch: MB per record")
    parser.add_argument("--max-concurrent-invocations", type=int, default=1,
                        help="async: requests one instance works on at a time")
    parser.add_argument("--wait", action="store_true", help="wait until in service / completed")
    args = parser.parse_args(argv)
    args.name = args.name or kit.unique_name("medseg")
    if args.mode == "batch" and not args.input_s3:
        parser.error("batch needs --input-s3")
    if args.mode != "realtime":
        args.output_s3 = kit.s3_uri(args.output_s3, args.bucket, f"medseg/{args.mode}-output",
                                    "--output-s3")
        args.failure_s3 = args.failure_s3 or args.output_s3.rstrip("/") + "/failures"
    return args


def main(args, dry_run):
    session = kit.sagemaker_session(args, dry_run)
    (deploy_v2 if args.sdk == "v2" else deploy_v3)(args, session)
    print(f"{args.mode}: {args.name}", file=sys.stderr)


if __name__ == "__main__":
    kit.run(main, parse_args())
