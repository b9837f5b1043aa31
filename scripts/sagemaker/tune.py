#!/usr/bin/env python3
"""Start a SageMaker hyperparameter tuning job over medseg training jobs (SDK v2 or v3).

The objective is `val_mean_dice` (Maximize), one of the metric definitions medseg prints. Tuned:
learning_rate (continuous, logarithmic), weight_decay (continuous, logarithmic), batch_size and
optimizer (categorical). --hyperparameter KEY=VALUE sets static hyperparameters (a tuned key wins).
Every training option of train.py applies (--spot, --input-mode, ...).

  python scripts/sagemaker/tune.py --image URI --role ARN --bucket B --spot --max-jobs 20 \\
      --hyperparameter epochs=100

--dry-run prints the CreateHyperParameterTuningJob request as JSON and calls no AWS service.
"""

import argparse
import sys

import kit
import train

OBJECTIVE_METRIC = "val_mean_dice"
OBJECTIVE_TYPE = "Maximize"


def hyperparameter_ranges(sdk):
    """The tuned hyperparameters (medseg's aliases) and their ranges."""
    if sdk == "v2":
        from sagemaker.tuner import CategoricalParameter, ContinuousParameter
    else:
        from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter
    return {
        "learning_rate": ContinuousParameter(1e-5, 1e-3, scaling_type="Logarithmic"),
        "weight_decay": ContinuousParameter(1e-6, 1e-3, scaling_type="Logarithmic"),
        "batch_size": CategoricalParameter([1, 2, 4]),
        "optimizer": CategoricalParameter(["adam", "adamw"]),
    }


def tuner_options(args):
    """HyperparameterTuner arguments common to v2 and v3."""
    return dict(
        hyperparameter_ranges=hyperparameter_ranges(args.sdk),
        objective_metric_name=OBJECTIVE_METRIC,
        objective_type=OBJECTIVE_TYPE,
        metric_definitions=kit.load_metric_definitions(),
        strategy=args.strategy,
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        early_stopping_type=args.early_stopping,
        base_tuning_job_name=args.job_name,
    )


def tune_v2(args, session):
    from sagemaker.tuner import HyperparameterTuner

    estimator, inputs = train.make_estimator_v2(args, session)
    tuner = HyperparameterTuner(estimator, **tuner_options(args))
    tuner.fit(inputs, wait=False)
    if args.wait:
        tuner.wait()
    return tuner.latest_tuning_job.name


def tune_v3(args, session):
    from sagemaker.train.tuner import HyperparameterTuner

    trainer = train.make_trainer_v3(args, session)
    tuner = HyperparameterTuner(trainer, **tuner_options(args))
    # The channels are the trainer's own (whole Channel objects, input mode included).
    tuner.tune(wait=args.wait)
    return tuner.latest_tuning_job.hyper_parameter_tuning_job_name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_training_arguments(parser)
    parser.add_argument("--strategy", choices=["Bayesian", "Random", "Hyperband"], default="Bayesian")
    parser.add_argument("--max-jobs", type=int, default=10)
    parser.add_argument("--max-parallel-jobs", type=int, default=2)
    parser.add_argument("--early-stopping", choices=["Off", "Auto"], default="Off")
    parser.add_argument("--job-name", help="base tuning job name (at most 32 characters with the time)")
    args = parser.parse_args(argv)
    train.finish_training_args(parser, args)
    if args.checkpoint_s3:
        # The request gives every trial this one URI; medseg refuses (fails on) a checkpoint
        # written with other hyperparameters, so trials must not find each other's checkpoints.
        print("note: --checkpoint-s3 is the same for every training job of the tuning job; check "
              "that trials do not resume each other's checkpoints", file=sys.stderr)
    return args


def main(args, dry_run):
    session = kit.sagemaker_session(args, dry_run)
    name = (tune_v2 if args.sdk == "v2" else tune_v3)(args, session)
    print(f"tuning job: {name}", file=sys.stderr)


if __name__ == "__main__":
    kit.run(main, parse_args())
