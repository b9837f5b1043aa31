#!/usr/bin/env bash
# Builds the medseg image from the repository's Dockerfile and pushes it to Amazon ECR; prints
# the image URI as the last line on stdout (the tools' own output goes to stderr).
#
#   scripts/sagemaker/build_and_push.sh [--region R] [--repository medseg] [--tag latest]
#                                       [--account ID] [--dry-run]
#
# Steps: create the ECR repository if missing, log Docker in to the registry, build for
# linux/amd64 (SageMaker's instances; also right from an arm64 laptop), tag, push.
# --dry-run prints the commands and runs none (no aws, no docker): --account and --region are
# then shown as <account> and <region> when not given.
#
# Needs the AWS CLI v2 and Docker with buildx (for --platform).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
repository=medseg tag=latest account="" dry_run=0
while (($#)); do
  case "$1" in
    --region) region="${2:?--region needs a value}"; shift 2 ;;
    --repository) repository="${2:?--repository needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --account) account="${2:?--account needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build_and_push: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

if ((dry_run)); then
  account="${account:-<account>}"
  region="${region:-<region>}"
else
  region="${region:-$(aws configure get region || true)}"
  if [ -z "$region" ]; then
    echo "build_and_push: no AWS region: pass --region or set AWS_REGION" >&2
    exit 2
  fi
  account="${account:-$(aws sts get-caller-identity --query Account --output text)}"
fi
registry="$account.dkr.ecr.$region.amazonaws.com"
image="$registry/$repository:$tag"

# Runs a command (its output to stderr), or under --dry-run only prints it.
run() {
  if ((dry_run)); then
    echo "$*"
  else
    "$@" >&2
  fi
}

if ((dry_run)); then
  echo "aws ecr describe-repositories --region $region --repository-names $repository" \
       "|| aws ecr create-repository --region $region --repository-name $repository"
  echo "aws ecr get-login-password --region $region" \
       "| docker login --username AWS --password-stdin $registry"
else
  aws ecr describe-repositories --region "$region" --repository-names "$repository" \
      >/dev/null 2>&1 \
    || aws ecr create-repository --region "$region" --repository-name "$repository" >&2
  aws ecr get-login-password --region "$region" \
    | docker login --username AWS --password-stdin "$registry" >&2
fi
run docker build --platform linux/amd64 -t "$repository:$tag" -f "$root/Dockerfile" "$root"
run docker tag "$repository:$tag" "$image"
run docker push "$image"
echo "$image"
