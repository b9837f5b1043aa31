#!/usr/bin/env python3
"""Start a SageMaker Processing job that runs `medseg preprocess` on several instances (SDK v2 or v3).

The container gets no entrypoint and no arguments by default: medseg started with no argument
in a Processing container runs `preprocess` (it finds /opt/ml/config/processingjobconfig.json)
and takes its folders from the job's input and output named `data`. --set KEY=VALUE passes
configuration (`medseg preprocess --set ...`).

  python scripts/sagemaker/process.py --image URI --role ARN \\
      --input-s3 s3://B/BraTS/ --output-s3 s3://B/medseg/records/ --instance-count 4

The input is FullyReplicated by default: every instance sees all cases and medseg takes its own
share (case index modulo the number of hosts). --distribution ShardedByS3Key instead gives each
instance a share of the S3 *objects*, so use it only when every object holds a whole case (an
unlabelled 4-D NIfTI image): a case's image and label files (Decathlon
imagesTr/labelsTr, a BraTS case folder's per-modality files) are separate objects and would be
split across instances. --dry-run prints the CreateProcessingJob request as JSON and calls no
AWS service.
"""

import argparse
import sys

import kit

INPUT_PATH = "/opt/ml/processing/input/data"    # medseg preprocess's default --input
OUTPUT_PATH = "/opt/ml/processing/output/data"  # medseg preprocess's default --output
DEFAULT_PROCESSING_INSTANCE_TYPE = "ml.c5.4xlarge"  # preprocessing runs on CPU cores


def container_arguments(args):
    """None (the image's default: preprocess) unless configuration is passed."""
    if not args.set:
        return None
    arguments = ["preprocess"]
    for setting in args.set:
        arguments += ["--set", setting]
    return arguments


def processor_settings(args, session):
    """The Processor's arguments: the same keywords in SDK v2 and v3."""
    return dict(role=args.role, image_uri=args.image, instance_count=args.instance_count,
                instance_type=args.instance_type, volume_size_in_gb=args.volume_size,
                max_runtime_in_seconds=args.max_run, base_job_name="medseg-preprocess",
                sagemaker_session=session)


def run_settings(args):
    """Processor.run()'s arguments besides inputs and outputs, the same in SDK v2 and v3."""
    return dict(arguments=container_arguments(args), wait=args.wait, logs=args.wait,
                job_name=args.job_name)


def process_v2(args, session):
    from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor

    processor = Processor(**processor_settings(args, session))
    processor.run(
        inputs=[ProcessingInput(source=args.input_s3, destination=INPUT_PATH, input_name="data",
                                s3_data_distribution_type=args.distribution)],
        outputs=[ProcessingOutput(source=OUTPUT_PATH, destination=args.output_s3,
                                  output_name="data")],
        **run_settings(args),
    )
    return processor.latest_job.job_name


def process_v3(args, session):
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import (ProcessingInput, ProcessingOutput, ProcessingS3Input,
                                       ProcessingS3Output)

    processor = Processor(**processor_settings(args, session))
    processor.run(
        inputs=[ProcessingInput(input_name="data", s3_input=ProcessingS3Input(
            s3_uri=args.input_s3, local_path=INPUT_PATH, s3_data_type="S3Prefix",
            s3_input_mode="File", s3_data_distribution_type=args.distribution))],
        outputs=[ProcessingOutput(output_name="data", s3_output=ProcessingS3Output(
            s3_uri=args.output_s3, local_path=OUTPUT_PATH, s3_upload_mode="EndOfJob"))],
        **run_settings(args),
    )
    return processor.latest_job.processing_job_name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kit.add_common_arguments(parser)
    parser.add_argument("--image", required=True, help="medseg image URI in ECR")
    parser.add_argument("--bucket", help="S3 bucket for the default input and output URIs")
    parser.add_argument("--input-s3", help="NIfTI cases (default s3://BUCKET/medseg/data/raw)")
    parser.add_argument("--output-s3", help="record shards (default s3://BUCKET/medseg/data/train)")
    parser.add_argument("--distribution", choices=["FullyReplicated", "ShardedByS3Key"],
                        default="FullyReplicated", help="S3 distribution of the input (see above)")
    parser.add_argument("--instance-type", default=DEFAULT_PROCESSING_INSTANCE_TYPE)
    parser.add_argument("--instance-count", type=int, default=2)
    parser.add_argument("--volume-size", type=int, default=100, help="EBS volume per instance, GB")
    parser.add_argument("--max-run", type=int, default=6 * 3600, help="MaxRuntimeInSeconds")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="medseg configuration for preprocess, e.g. pixdim=1.5,1.5,2.0")
    parser.add_argument("--job-name", help="job name (default medseg-preprocess-<time>)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and stream its logs")
    args = parser.parse_args(argv)
    args.input_s3 = kit.s3_uri(args.input_s3, args.bucket, "medseg/data/raw", "--input-s3")
    args.output_s3 = kit.s3_uri(args.output_s3, args.bucket, "medseg/data/train", "--output-s3")
    return args


def main(args, dry_run):
    session = kit.sagemaker_session(args, dry_run)
    name = (process_v2 if args.sdk == "v2" else process_v3)(args, session)
    print(f"processing job: {name}", file=sys.stderr)


if __name__ == "__main__":
    kit.run(main, parse_args())
