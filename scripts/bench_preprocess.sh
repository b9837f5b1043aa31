#!/usr/bin/env bash
# Preprocessing and crop throughput with the image's malloc settings (see Dockerfile):
# seconds per full-size 240x240x155x4 case (decode + static transforms) on 1 thread and on all
# threads, and random 128x128x64 crops per second per thread.
set -euo pipefail
cd "$(dirname "$0")/.."
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1}"
build/medseg bench preprocess --cases "${CASES:-3}"
build/medseg bench crops --steps "${CROPS:-300}"
