# medseg's SageMaker training and hosting image (bring your own container).
#
# Build stage: Debian 12 + NVIDIA's CUDA toolkit (the CUDA version of the pinned torch wheel),
# then the same `scripts/setup.sh --cuda` that CI runs: it installs the torch wheel pinned in
# scripts/requirements.txt into /src/.venv and builds medseg against its LibTorch.
# Runtime stage: Debian 12 slim with the medseg binary, the shipped configuration and the shared
# libraries it loads: the wheel's LibTorch and CUDA libraries (cuDNN, NCCL, cuBLAS, ...) and the
# Debian libraries ldd lists. The NVIDIA container runtime injects the driver (libcuda) at run time.
#
#   docker build -t medseg .
#   docker run --gpus all medseg train      # what SageMaker runs
ARG CUDA_PACKAGE_VERSION=13-0

FROM debian:12 AS build
ARG CUDA_PACKAGE_VERSION
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends "cuda-toolkit-${CUDA_PACKAGE_VERSION}" \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda/bin:${PATH}
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY config/ config/
COPY scripts/ scripts/
COPY src/ src/
RUN MEDSEG_BUILD_TESTS=OFF MEDSEG_INSTALL_PREFIX=/usr/local MEDSEG_BUILD_DIR=/tmp/build \
    scripts/setup.sh --cuda
# The shared libraries the binary loads, for the runtime stage: all of the wheel's LibTorch and
# nvidia-* libraries (LibTorch dlopens cuDNN and NVRTC parts that ldd cannot see; the Python
# bindings are left out), then every other library ldd lists except glibc's and the driver's.
RUN site=/src/.venv/lib/python3.11/site-packages \
 && mkdir -p /runtime-libs \
 && cp -a "$site"/torch/lib/. "$site"/nvidia/*/lib/. /runtime-libs/ \
 && rm -f /runtime-libs/libtorch_python.so \
 && LD_LIBRARY_PATH=/runtime-libs ldd /usr/local/bin/medseg | awk '/=> \// {print $3}' \
    | grep -v '^/runtime-libs/' \
    | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda)\.so' \
    | xargs -I{} cp -L {} /runtime-libs/

FROM debian:12-slim
LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
COPY --from=build /runtime-libs/ /usr/local/lib/medseg/
COPY --from=build /usr/local/bin/medseg /usr/local/bin/medseg
COPY --from=build /usr/local/share/medseg/brats_unet.yaml /usr/local/share/medseg/brats_unet.yaml
RUN echo /usr/local/lib/medseg > /etc/ld.so.conf.d/medseg.conf && ldconfig \
 && ln -s /usr/local/bin/medseg /usr/local/bin/train \
 && ln -s /usr/local/bin/medseg /usr/local/bin/serve \
 && medseg --version
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Keep freed case-sized buffers in one heap for reuse instead of returning them to the kernel:
# page-faulting fresh memory for every case costs more than the transforms (bench preprocess).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1
# Exec form: SageMaker's `docker run IMAGE train` gives argv[1] == "train" and SIGTERM reaches
# medseg itself. No init wrapper: SageMaker runs its own.
ENTRYPOINT ["/usr/local/bin/medseg"]
