# syntax=docker/dockerfile:1
# One image for the API (`hpcinfra api`), the worker (`hpcinfra worker`) and the migrations
# (`hpcinfra db upgrade`): docker-compose.yml runs each with its own command. It holds no secret;
# every setting comes from the environment at run time.

# The Pulumi CLI, for the worker's aws, gcp and azure providers. Its version is the Python SDK's too
# (installed below), as Pulumi releases them together.
ARG PULUMI_VERSION=3.272.0

FROM python:3.11-slim AS pulumi
ARG PULUMI_VERSION
# Optional: the SHA-256 of the release tarball, to check it against a value you pinned yourself
# rather than against the checksums file published beside it.
ARG PULUMI_SHA256=""
ARG TARGETARCH
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/pulumi
RUN set -eu; \
    case "${TARGETARCH:-amd64}" in \
        amd64) arch=x64 ;; \
        arm64) arch=arm64 ;; \
        *) echo "no Pulumi CLI for architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    tarball="pulumi-v${PULUMI_VERSION}-linux-${arch}.tar.gz"; \
    curl -fsSLO "https://get.pulumi.com/releases/sdk/${tarball}"; \
    if [ -n "${PULUMI_SHA256}" ]; then \
        echo "${PULUMI_SHA256}  ${tarball}" > checksums.txt; \
    else \
        curl -fsSL "https://get.pulumi.com/releases/sdk/pulumi-${PULUMI_VERSION}-checksums.txt" \
            | grep " ${tarball}\$" > checksums.txt; \
    fi; \
    sha256sum -c checksums.txt; \
    tar -xzf "${tarball}"; \
    mkdir -p /opt/pulumi; \
    mv pulumi /opt/pulumi/bin; \
    /opt/pulumi/bin/pulumi version

FROM python:3.11-slim
ARG PULUMI_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/pulumi/bin:$PATH \
    PULUMI_SKIP_UPDATE_CHECK=true \
    HPCINFRA_DATA_DIR=/var/lib/hpcinfra

COPY --from=pulumi /opt/pulumi /opt/pulumi

# The project is installed from a bind mount of the build context, so its source stays out of the image.
RUN --mount=type=bind,source=.,target=/src,rw \
    --mount=type=cache,target=/root/.cache/pip \
    pip install /src "pulumi==${PULUMI_VERSION}"

# A fixed, unprivileged user; the data folder (a volume in docker-compose.yml) belongs to it, and a
# new named volume takes over that ownership.
RUN groupadd --system --gid 10001 hpcinfra \
    && useradd --system --uid 10001 --gid hpcinfra --create-home --home-dir /home/hpcinfra hpcinfra \
    && mkdir -p /var/lib/hpcinfra \
    && chown hpcinfra:hpcinfra /var/lib/hpcinfra
USER hpcinfra
WORKDIR /home/hpcinfra

EXPOSE 8000
CMD ["hpcinfra", "api"]
