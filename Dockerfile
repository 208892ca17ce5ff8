# syntax=docker/dockerfile:1
#
# Kestrel's container image: a build stage, then a slim runtime holding only the binary (the chat
# page is embedded in it). Two variants of one file:
#
#   docker build -t kestrel:0.1.0 .                                # CPU, on debian:bookworm-slim
#   docker build -t kestrel:0.1.0-cuda --build-arg VARIANT=cuda .  # CUDA, on NVIDIA's runtime image
#
#   docker run --rm -p 8000:8000 -v hf-cache:/cache kestrel:0.1.0 \
#       serve --model Qwen/Qwen3-1.7B --served-model-name qwen3 --host 0.0.0.0
#   docker run --rm --gpus all -p 8000:8000 -v hf-cache:/cache kestrel:0.1.0-cuda serve ...
#
# The CUDA variant builds the `cuda` feature. The CUDA backend loads the driver, cuBLAS and NVRTC
# at run time (nothing CUDA is linked at build time), so it builds on the plain Rust image and
# needs NVIDIA's *runtime* image (CUDA libraries, NVRTC included) plus the NVIDIA container
# toolkit on the host. Its base is Ubuntu 24.04, whose glibc is newer than the build stage's.
# See docs/deploy.md.

ARG RUST_VERSION=1.95
ARG VARIANT=cpu
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG VARIANT
WORKDIR /src
COPY . .
# Portable kernels are picked at run time (AVX2 where the CPU has it), so no target-cpu flag:
# the image runs on any x86-64 node. `$features` is empty or two words: unquoted on purpose.
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    case "$VARIANT" in \
        cpu) features="" ;; \
        cuda) features="--features cuda" ;; \
        *) echo "VARIANT must be cpu or cuda, got $VARIANT" >&2; exit 1 ;; \
    esac; \
    cargo build --release --locked -p kestrel $features; \
    cp target/release/kestrel /usr/local/bin/kestrel

FROM debian:bookworm-slim AS runtime-cpu
FROM ${CUDA_IMAGE} AS runtime-cuda

# A stage of this file, picked by VARIANT (its base images are pinned above).
# hadolint ignore=DL3006
FROM runtime-${VARIANT}
# CA roots for Hugging Face downloads (the distribution's current ones, so unpinned); a fixed
# non-root user (the chart's runAsUser).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 kestrel \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /cache kestrel \
    && mkdir -p /cache && chown kestrel:kestrel /cache
COPY --from=build /usr/local/bin/kestrel /usr/local/bin/kestrel
USER 10001:10001
# Hugging Face models download here (mount a volume to keep them across restarts).
ENV HF_HOME=/cache/huggingface
EXPOSE 8000
# SIGTERM drains: new requests get 503, running ones finish (--shutdown-timeout), exit 0.
STOPSIGNAL SIGTERM
# No HEALTHCHECK: the image has no HTTP client; orchestrators probe GET /health (liveness) and
# GET /ready (readiness) themselves.
ENTRYPOINT ["kestrel"]
CMD ["serve", "--help"]
