# syntax=docker/dockerfile:1
#
# One image for everything yr runs in a cluster:
#   default CMD           the instance server a YRInstance pod runs   (python -m yr.server)
#   yr-operator -A        the kopf operator                            (charts/yr operator Deployment)
#   python -m yr.gateway  the gateway for drivers outside the cluster  (charts/yr gateway Deployment)
#
#   docker build -t yr:dev .
#
# The runtime stage has no compiler and no pip cache, runs as uid/gid 10001 (what the chart and
# the operator's pods set in runAsUser) and works with a read-only root filesystem.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtualenv makes the install one directory to copy into the runtime stage; both stages share
# the base image, so its interpreter path stays valid.
RUN python -m venv /opt/yr
WORKDIR /src
# Only what `pip install .` needs (see .dockerignore); pyproject.toml names README.md as readme.
COPY pyproject.toml README.md ./
COPY yr ./yr
COPY operator ./operator
RUN /opt/yr/bin/pip install ".[kubernetes,operator]" \
 && /opt/yr/bin/python -c "import yr, yr_operator"

FROM python:3.11-slim
LABEL org.opencontainers.image.title="yr" \
      org.opencontainers.image.description="yr stateful functions: instance server, operator, gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric uid so the kubelet can verify runAsNonRoot; no home, no login shell.
RUN groupadd --system --gid 10001 yr \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin yr
COPY --from=build /opt/yr /opt/yr
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the cluster. HOME=/tmp: the one
# writable place (an emptyDir in every pod), for libraries that insist on a cache directory.
ENV PATH=/opt/yr/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# 50051: instance gRPC (docs/kubernetes-contract.md); 50052: gateway; 8080: operator liveness.
EXPOSE 50051 50052 8080
CMD ["python", "-m", "yr.server"]
