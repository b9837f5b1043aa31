#!/usr/bin/env python3
"""Start a SageMaker training job running the medseg image (SDK v2 Estimator or v3 ModelTrainer).

  python scripts/sagemaker/train.py --image URI --role ARN --bucket B --spot \\
      --checkpoint-s3 s3://B/medseg/checkpoints/run1 \\
      --hyperparameter epochs=300 --hyperparameter roi_size=[128,128,64] --hyperparameter amp=bf16

Inference as a (cheap, Spot) training job: --command infer --train-channel data --model-s3
s3://.../model.tar.gz (channels `data` and `model`). --dry-run prints the CreateTrainingJob
request as JSON on stdout and calls no AWS service.
"""

import argparse
import sys

import kit

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # medseg's default checkpoint folder


def add_training_arguments(parser):
    """The training job's options (tune.py shares them)."""
    kit.add_common_arguments(parser)
    parser.add_argument("--image", required=True, help="medseg image URI in ECR")
    parser.add_argument("--bucket", help="S3 bucket for the default data and output URIs")
    parser.add_argument("--train-s3", help="train channel (default s3://BUCKET/medseg/data/train)")
    parser.add_argument("--validation-s3", help="optional validation channel")
    parser.add_argument("--model-s3", help="optional model channel (a model.tar.gz; for --command infer)")
    parser.add_argument("--train-channel", default="train",
                        help="name of the --train-s3 channel (`data` for --command infer)")
    parser.add_argument("--distribution", choices=["FullyReplicated", "ShardedByS3Key"],
                        default="FullyReplicated", help="S3 distribution of the train channel")
    parser.add_argument("--output-s3", help="model output prefix (default s3://BUCKET/medseg/output)")
    parser.add_argument("--instance-type", default=kit.DEFAULT_INSTANCE_TYPE)
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--volume-size", type=int, default=100, help="EBS volume per instance, GB")
    parser.add_argument("--input-mode", choices=["File", "FastFile", "Pipe"], default="File")
    parser.add_argument("--spot", action="store_true", help="managed Spot training")
    parser.add_argument("--max-run", type=int, default=24 * 3600, help="MaxRuntimeInSeconds")
    parser.add_argument("--max-wait", type=int, default=None,
                        help="MaxWaitTimeInSeconds with --spot (default: 2 x --max-run; at least --max-run)")
    parser.add_argument("--checkpoint-s3", help="checkpoint_s3_uri (synced with /opt/ml/checkpoints)")
    parser.add_argument("--hyperparameter", action="append", type=kit.parse_hyperparameter,
                        metavar="KEY=VALUE", help="repeatable; VALUE is parsed as JSON if it parses")
    parser.add_argument("--command", help="the medseg command to run (hyperparameter `command`), e.g. infer")
    parser.add_argument("--wait", action="store_true", help="wait for the job and stream its logs")


def finish_training_args(parser, args):
    """Defaults that depend on other options, and the checks SageMaker would otherwise reject."""
    args.train_s3 = kit.s3_uri(args.train_s3, args.bucket, "medseg/data/train", "--train-s3")
    args.output_s3 = kit.s3_uri(args.output_s3, args.bucket, "medseg/output", "--output-s3")
    if args.spot:
        # The wait includes the time spent waiting for Spot capacity, so leave room for it.
        args.max_wait = args.max_wait or 2 * args.max_run
        if args.max_wait < args.max_run:
            parser.error("--max-wait must be at least --max-run (SageMaker's rule for Spot)")
        if not args.checkpoint_s3:
            print("warning: --spot without --checkpoint-s3: an interrupted job restarts from scratch",
                  file=sys.stderr)
    elif args.max_wait is not None:
        parser.error("--max-wait applies to --spot only")


def channels(args):
    """Channel name -> (S3 URI, S3 distribution type)."""
    result = {args.train_channel: (args.train_s3, args.distribution)}
    if args.validation_s3:
        result["validation"] = (args.validation_s3, "FullyReplicated")
    if args.model_s3:
        result["model"] = (args.model_s3, "FullyReplicated")
    return result


def make_estimator_v2(args, session):
    """SDK v2: the Estimator and the fit() inputs."""
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput

    estimator = Estimator(
        image_uri=args.image,
        role=args.role,
        instance_count=args.instance_count,
        instance_type=args.instance_type,
        volume_size=args.volume_size,
        input_mode=args.input_mode,
        output_path=args.output_s3,
        hyperparameters=kit.hyperparameters_from_args(args),
        metric_definitions=kit.load_metric_definitions(),
        use_spot_instances=args.spot,
        max_run=args.max_run,
        max_wait=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3,
        checkpoint_local_path=CHECKPOINT_LOCAL_PATH if args.checkpoint_s3 else None,
        # A bring-your-own image has no SageMaker Debugger or Profiler hooks.
        debugger_hook_config=False,
        disable_profiler=True,
        base_job_name="medseg",
        sagemaker_session=session,
    )
    inputs = {name: TrainingInput(uri, distribution=distribution)
              for name, (uri, distribution) in channels(args).items()}
    return estimator, inputs


def make_trainer_v3(args, session, base_job_name="medseg"):
    """SDK v3: the ModelTrainer (its channels included)."""
    from sagemaker.core.training.configs import (Channel, CheckpointConfig, Compute, DataSource,
                                                 MetricDefinition, OutputDataConfig, S3DataSource,
                                                 StoppingCondition)
    from sagemaker.train import ModelTrainer

    # Whole Channels, not InputData: v3 gives an InputData channel InputMode "File", which would
    # override the job's TrainingInputMode (FastFile, Pipe).
    input_data = [
        Channel(channel_name=name, input_mode=args.input_mode,
                data_source=DataSource(s3_data_source=S3DataSource(
                    s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type=distribution)))
        for name, (uri, distribution) in channels(args).items()
    ]
    checkpoint_config = None
    if args.checkpoint_s3:
        checkpoint_config = CheckpointConfig(s3_uri=args.checkpoint_s3, local_path=CHECKPOINT_LOCAL_PATH)
    trainer = ModelTrainer(
        sagemaker_session=session,
        role=args.role,
        training_image=args.image,
        base_job_name=base_job_name,
        compute=Compute(instance_type=args.instance_type, instance_count=args.instance_count,
                        volume_size_in_gb=args.volume_size, enable_managed_spot_training=args.spot),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=args.max_run,
                                             max_wait_time_in_seconds=args.max_wait),
        checkpoint_config=checkpoint_config,
        output_data_config=OutputDataConfig(s3_output_path=args.output_s3),
        training_input_mode=args.input_mode,
        hyperparameters=kit.hyperparameters_from_args(args),
        input_data_config=input_data,
    )
    # v3 takes metric definitions through this builder method, not a constructor argument.
    trainer.with_metric_definitions([MetricDefinition(name=d["Name"], regex=d["Regex"])
                                     for d in kit.load_metric_definitions()])
    return trainer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_arguments(parser)
    parser.add_argument("--job-name",
                        help="job name (v2; default medseg-<time>) or base job name (v3 appends a time)")
    args = parser.parse_args(argv)
    finish_training_args(parser, args)
    return args


def main(args, dry_run):
    session = kit.sagemaker_session(args, dry_run)
    if args.sdk == "v2":
        estimator, inputs = make_estimator_v2(args, session)
        estimator.fit(inputs, wait=args.wait, logs="All" if args.wait else "None",
                      job_name=args.job_name)
        name = estimator.latest_training_job.name
    else:
        trainer = make_trainer_v3(args, session, base_job_name=args.job_name or "medseg")
        trainer.train(wait=args.wait, logs=args.wait)
        name = trainer._latest_training_job.training_job_name  # v3 has no public accessor
    print(f"training job: {name}", file=sys.stderr)


if __name__ == "__main__":
    kit.run(main, parse_args())
