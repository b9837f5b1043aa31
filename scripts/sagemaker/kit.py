"""Shared helpers of the medseg SageMaker launch kit (train.py, tune.py, process.py, deploy.py).

The scripts run with either SageMaker Python SDK: v2 (`sagemaker.estimator.Estimator`, ...) or v3
(`sagemaker.train.ModelTrainer`, `sagemaker.core.*`). `--dry-run` builds every request through the
SDK's real code path; only the AWS transport is replaced (see DryRun), so no AWS service is called
and no network is needed.
"""

import argparse
import copy
import datetime
import importlib.metadata
import json
import os
import sys
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parent
METRIC_DEFINITIONS_FILE = KIT_DIR / "metric_definitions.json"
MAX_METRIC_DEFINITIONS = 40  # SageMaker's limit per training job
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
DRY_RUN_REGION = "us-east-1"
DRY_RUN_ACCOUNT = "111122223333"  # only ever appears in fake ARNs of dry-run responses
DRY_RUN_ACCESS_KEY = "AKIADRYRUNDRYRUN0000"  # fake credentials: a dry run never signs a request

# SDK config of the Session in a dry run, instead of the user's and admin's config files (so a
# dry run prints the same request on every machine): telemetry off (an HTTP request of its own).
DRY_RUN_SAGEMAKER_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


# ---------------------------------------------------------------------------------------------
# Command line


def installed_sdk_major():
    """The major version of the installed `sagemaker` package ("v2" or "v3").

    Read from the package metadata: v3's `sagemaker` is a namespace package without __version__.
    """
    try:
        version = importlib.metadata.version("sagemaker")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("error: the SageMaker Python SDK is not installed (pip install sagemaker)")
    return "v3" if int(version.split(".")[0]) >= 3 else "v2"


def add_common_arguments(parser):
    """Options every script shares: SDK choice, region, role, dry run."""
    parser.add_argument("--sdk", choices=["v2", "v3"], default=None,
                        help="SDK API to use (default: the installed sagemaker package's major version)")
    parser.add_argument("--region", default=None,
                        help="AWS region (default: the AWS configuration; us-east-1 in a dry run)")
    parser.add_argument("--role", required=True, help="IAM role ARN that SageMaker assumes")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the AWS requests as JSON on stdout and call no AWS service")


def resolve_sdk(args):
    """Check that --sdk matches the installed package (the two major versions cannot coexist)."""
    installed = installed_sdk_major()
    if args.sdk is None:
        args.sdk = installed
    elif args.sdk != installed:
        sys.exit(f"error: --sdk {args.sdk} but the installed sagemaker package is {installed}")
    return args.sdk


def parse_hyperparameter(text):
    """KEY=VALUE -> (key, value); the value is parsed as JSON when it parses, else kept a string.

    So epochs=300 is an int, learning_rate=1e-4 a float, resume=false a bool,
    roi_size=[128,128,64] a list and amp=bf16 the string "bf16".
    """
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def hyperparameters_from_args(args):
    """The hyperparameters dict of --hyperparameter and --command (later ones win)."""
    hyperparameters = dict(args.hyperparameter or [])
    if getattr(args, "command", None):
        # medseg reads the hyperparameter `command` when the platform passes no argument (v3).
        hyperparameters["command"] = args.command
    return hyperparameters


def load_metric_definitions():
    """The metric definitions medseg prints (`medseg metric-definitions`), as SageMaker takes them."""
    definitions = json.loads(METRIC_DEFINITIONS_FILE.read_text())
    if len(definitions) > MAX_METRIC_DEFINITIONS:
        sys.exit(f"error: {METRIC_DEFINITIONS_FILE} has {len(definitions)} metric definitions, "
                 f"SageMaker accepts at most {MAX_METRIC_DEFINITIONS}")
    return definitions


def s3_uri(explicit, bucket, key, what):
    """An explicit S3 URI, else s3://<bucket>/<key>; exit with a clear message when neither."""
    if explicit:
        return explicit
    if bucket:
        return f"s3://{bucket}/{key}"
    sys.exit(f"error: give --bucket or the {what} S3 URI")


def unique_name(prefix):
    """prefix + UTC time to the millisecond, e.g. medseg-20250101-120000-123 (SageMaker's 63 max)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return f"{prefix}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"


# ---------------------------------------------------------------------------------------------
# Sessions and the dry run


class DryRun:
    """Stands in for the AWS transport of a boto3 Session.

    Registered on the session's event system, so every client made from it afterwards (the SDK
    makes its own) is covered. Each API call still goes through botocore's parameter building and
    validation against the service model; `before-call` then answers with a minimal response
    instead of sending the request. The calls are recorded in order.
    """

    def __init__(self, region):
        self.region = region  # for the fake ARNs
        self.calls = []
        self._created = {}  # operation noun (e.g. "TrainingJob") -> the Create request params

    def attach(self, boto_session):
        boto_session.events.register("before-parameter-build", self._record)
        boto_session.events.register("before-call", self._respond)

    def _record(self, params, model, **_):
        service = model.service_model.service_name
        self.calls.append({"service": service, "operation": model.name,
                           "params": copy.deepcopy(params)})
        if model.name.startswith("Create"):
            self._created[model.name[len("Create"):]] = copy.deepcopy(params)

    def _respond(self, model, **_):
        from botocore.awsrequest import AWSResponse

        response = self._fake_response(model.service_model.service_name, model.name)
        response.setdefault("ResponseMetadata", {"HTTPStatusCode": 200, "RequestId": "dry-run"})
        return AWSResponse(None, 200, {}, None), response

    def _fake_response(self, service, operation):
        """The smallest answer that lets the SDK carry on; Describe echoes the Create request."""
        if service != "sagemaker":
            # E.g. S3 or STS to find a default bucket or account: not answered, so that a dry run
            # shows when a script lets the SDK look something up instead of passing it.
            raise RuntimeError(f"dry run: the SDK called {service}:{operation}, which a dry run "
                               "does not answer (pass the role ARN and the S3 URIs explicitly)")
        if operation.startswith("Create"):
            noun = operation[len("Create"):]
            return {f"{noun}Arn": self.arn(noun)}
        if operation.startswith("Describe"):
            return self._describe(operation[len("Describe"):])
        return {}

    def _describe(self, noun):
        """What a Describe call right after the Create returns: the request, an ARN, a status."""
        response = copy.deepcopy(self._created.get(noun, {}))
        now = datetime.datetime.now(datetime.timezone.utc)
        response.update({f"{noun}Arn": self.arn(noun), "CreationTime": now,
                         "LastModifiedTime": now})
        if noun not in ("Model", "EndpointConfig"):  # these two have no status
            response[f"{noun}Status"] = "Creating" if noun == "Endpoint" else "InProgress"
        if noun == "TrainingJob":
            response["SecondaryStatus"] = "Starting"
        return response

    def arn(self, noun):
        kebab = "".join("-" + c.lower() if c.isupper() else c for c in noun).lstrip("-")
        return f"arn:aws:sagemaker:{self.region}:{DRY_RUN_ACCOUNT}:{kebab}/dry-run"

    def requests(self):
        """The recorded calls, JSON-ready (datetimes and bytes as strings)."""
        return json.loads(json.dumps(self.calls, default=str))


def boto_session(args, dry_run=None):
    """A boto3 Session; for a dry run with fake credentials, an explicit region and `dry_run`."""
    import boto3

    if dry_run is None:
        return boto3.Session(region_name=args.region)
    # Fake static credentials: nothing looks for real ones (no instance-metadata lookups).
    session = boto3.Session(aws_access_key_id=DRY_RUN_ACCESS_KEY, aws_secret_access_key="dry-run",
                            region_name=dry_run.region)
    dry_run.attach(session)
    return session


def sagemaker_session(args, dry_run=None):
    """The SDK's Session (v2: sagemaker.session.Session, v3: sagemaker.core.helper...Session)."""
    if args.sdk == "v2":
        from sagemaker.session import Session
    else:
        from sagemaker.core.helper.session_helper import Session
    kwargs = {"boto_session": boto_session(args, dry_run)}
    if dry_run is not None:
        kwargs["sagemaker_config"] = DRY_RUN_SAGEMAKER_CONFIG
    return Session(**kwargs)


def json_output(dry_run):
    """Where the dry-run JSON goes: the real stdout. From here on file descriptor 1 is stderr,
    so the SDK's logs, banners and tracebacks never mix with the JSON."""
    if not dry_run:
        return None
    sys.stdout.flush()
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return real_stdout


def isolate_dry_run(args):
    """Environment for a dry run, set before the SDK is imported: fake static credentials for the
    sessions the SDK makes on its own (SDK v2 makes one at import time, and without credentials
    botocore would ask the EC2 instance metadata service over the network), no profile, and no
    role check (SDK v3 checks the role with IAM reads, SimulatePrincipalPolicy and GetRole,
    before it builds a request; SAGEMAKER_VALIDATE_ROLE=false is its documented switch)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)  # a profile would take precedence over the variables below
    os.environ.update(AWS_ACCESS_KEY_ID=DRY_RUN_ACCESS_KEY, AWS_SECRET_ACCESS_KEY="dry-run",
                      AWS_DEFAULT_REGION=args.region or DRY_RUN_REGION,
                      AWS_EC2_METADATA_DISABLED="true", SAGEMAKER_VALIDATE_ROLE="false")


def run(main_function, args):
    """Run main_function(args, dry_run) and, for a dry run, print the requests as JSON."""
    resolve_sdk(args)
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    dry_run = None
    if args.dry_run:
        isolate_dry_run(args)
        dry_run = DryRun(args.region or DRY_RUN_REGION)
    out = json_output(args.dry_run)
    main_function(args, dry_run)
    if dry_run is not None:
        out.write(json.dumps(dry_run.requests(), indent=2) + "\n")
        out.flush()
