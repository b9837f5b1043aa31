# medseg's SageMaker training and hosting image (bring your own container).
#
# Build stage: Debian 12 + NVIDIA's CUDA toolkit + the official CUDA LibTorch 2.x, then the same
# scripts/setup.sh that CI runs (with MEDSEG_TORCH_PREFIX pointing at that LibTorch).
# Runtime stage: Debian 12 slim with the medseg binary, the shipped configuration and exactly the
# shared libraries the binary loads (collected with ldd). The NVIDIA container runtime injects the
# driver (libcuda) at run time.
#
#   docker build -t medseg .
#   docker run --gpus all medseg train      # what SageMaker runs
ARG CUDA_PACKAGE_VERSION=12-4
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.5.1%2Bcu124.zip

FROM debian:12 AS build
ARG CUDA_PACKAGE_VERSION
ARG LIBTORCH_URL
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates curl unzip gnupg \
 && curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends "cuda-toolkit-${CUDA_PACKAGE_VERSION}" \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
 && unzip -q /tmp/libtorch.zip -d /opt \
 && rm /tmp/libtorch.zip
ENV PATH=/usr/local/cuda/bin:${PATH}
WORKDIR /src
COPY CMakeLists.txt ./
COPY config/ config/
COPY scripts/ scripts/
COPY src/ src/
RUN MEDSEG_TORCH_PREFIX=/opt/libtorch MEDSEG_BUILD_TESTS=OFF MEDSEG_INSTALL_PREFIX=/usr/local \
    MEDSEG_BUILD_DIR=/tmp/build scripts/setup.sh
# The shared libraries the binary loads, for the runtime stage: all of LibTorch's (it dlopens
# cuDNN and NVRTC parts that ldd cannot see) and every other one ldd lists except glibc's and the
# driver's.
RUN mkdir -p /runtime-libs \
 && cp -a /opt/libtorch/lib/. /runtime-libs/ \
 && ldd /usr/local/bin/medseg | awk '/=> \// {print $3}' | grep -v '^/opt/libtorch/' \
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
