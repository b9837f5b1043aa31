"""build_and_push.sh: its dry run, and the real run against stand-ins for `aws` and `docker` that
log how they are called (the script itself runs unchanged)."""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from support import KIT_DIR, ROOT

SCRIPT = KIT_DIR / "build_and_push.sh"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/medseg:latest"

FAKE_AWS = """#!/usr/bin/env bash
echo "aws $*" >> "$TOOL_LOG"
case "$*" in
  "sts get-caller-identity"*) echo 123456789012 ;;
  "ecr describe-repositories"*) [ -n "${REPOSITORY_EXISTS:-}" ] || exit 254 ;;
  "ecr create-repository"*) echo '{"repository": {}}' ;;
  "ecr get-login-password"*) echo ecr-password ;;
  *) exit 1 ;;
esac
"""
FAKE_DOCKER = """#!/usr/bin/env bash
if [ "$1" = login ]; then stdin="$(cat)"; echo "docker $* <<< $stdin" >> "$TOOL_LOG"
else echo "docker $*" >> "$TOOL_LOG"; fi
echo "docker output"
"""


class BuildAndPush(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(subprocess.run, ["rm", "-rf", str(self.tmp)])
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir()
        for name, text in (("aws", FAKE_AWS), ("docker", FAKE_DOCKER)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        self.log = self.tmp / "tools.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", TOOL_LOG=str(self.log))

    def run_script(self, *args, **env):
        return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                              env=dict(self.env, **env), timeout=60)

    def tool_calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def test_dry_run_prints_every_step_and_runs_none(self):
        result = self.run_script("--dry-run")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.tool_calls(), [])
        lines = result.stdout.splitlines()
        registry = "<account>.dkr.ecr.<region>.amazonaws.com"
        self.assertIn("aws ecr describe-repositories --region <region> --repository-names medseg "
                      "|| aws ecr create-repository --region <region> --repository-name medseg", lines)
        self.assertIn("aws ecr get-login-password --region <region> | "
                      f"docker login --username AWS --password-stdin {registry}", lines)
        self.assertIn(f"docker build --platform linux/amd64 -t medseg:latest -f {ROOT}/Dockerfile {ROOT}",
                      lines)
        self.assertIn(f"docker push {registry}/medseg:latest", lines)
        self.assertEqual(lines[-1], f"{registry}/medseg:latest")

    def test_dry_run_with_account_region_repository_and_tag(self):
        result = self.run_script("--dry-run", "--account", ACCOUNT, "--region", REGION,
                                 "--repository", "seg", "--tag", "v7")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[-1], f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/seg:v7")
        self.assertEqual(self.tool_calls(), [])

    def test_push_creates_the_missing_repository_and_prints_only_the_uri(self):
        result = self.run_script("--region", REGION)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, IMAGE + "\n")  # tool output went to stderr
        self.assertEqual(self.tool_calls(), [
            "aws sts get-caller-identity --query Account --output text",
            f"aws ecr describe-repositories --region {REGION} --repository-names medseg",
            f"aws ecr create-repository --region {REGION} --repository-name medseg",
            f"aws ecr get-login-password --region {REGION}",
            f"docker login --username AWS --password-stdin {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
            " <<< ecr-password",
            f"docker build --platform linux/amd64 -t medseg:latest -f {ROOT}/Dockerfile {ROOT}",
            f"docker tag medseg:latest {IMAGE}",
            f"docker push {IMAGE}",
        ])

    def test_an_existing_repository_is_not_created_again(self):
        result = self.run_script("--region", REGION, "--account", ACCOUNT, REPOSITORY_EXISTS="1")
        self.assertEqual(result.returncode, 0, result.stderr)
        calls = self.tool_calls()
        self.assertFalse([c for c in calls if "create-repository" in c or "sts" in c], calls)
        self.assertIn(f"docker push {IMAGE}", calls)

    def test_a_failing_step_stops_the_script(self):
        # No region anywhere (aws configure get region fails): nothing is built or pushed.
        result = self.run_script()
        self.assertNotEqual(result.returncode, 0)
        self.assertFalse([c for c in self.tool_calls() if c.startswith("docker")])


if __name__ == "__main__":
    unittest.main()
