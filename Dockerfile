# One image for everything yr runs in a cluster:
#   default CMD           the instance server a YRInstance pod runs   (python -m yr.server)
#   yr-operator -A        the kopf operator                            (charts/yr operator Deployment)
#   python -m yr.gateway  the gateway for drivers outside the cluster  (charts/yr gateway Deployment)
#
#   docker build -t yr:dev .
#   docker build --build-arg BASE_IMAGE=registry.example/python:3.11-slim -t yr:dev .
#
# No `# syntax=` directive: it makes BuildKit fetch a frontend image from a registry, which fails
# offline; nothing here needs more than the builtin Dockerfile frontend (and the classic builder).
#
# The runtime stage has no compiler, no pip, no setuptools and no pip cache, runs as uid/gid 10001
# (what the chart and the operator's pods set in runAsUser) and works with a read-only root
# filesystem: all bytecode, the standard library's included, is compiled at build time.

# Any image equivalent to the official python:3.11-slim (python on PATH with venv support);
# .ci/container-engine builds one from Debian packages where Docker Hub is out of reach.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
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
# pip compiles what it installs; then pip and setuptools leave the virtualenv.
RUN /opt/yr/bin/pip install ".[kubernetes,operator,collective]" \
 && /opt/yr/bin/python -c "import yr, yr_operator" \
 && /opt/yr/bin/pip uninstall --yes pip setuptools \
 && rm -f /opt/yr/bin/pip*

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="yr" \
      org.opencontainers.image.description="yr stateful functions: instance server, operator, gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# Numeric uid so the kubelet can verify runAsNonRoot; no home, no login shell.
RUN groupadd --system --gid 10001 yr \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin yr
# The base's pip, setuptools and wheel (and ensurepip's bundled copies) are installers: nothing
# installs anything at run time, so they go. Then the standard library is compiled once here;
# on a read-only root Python would otherwise compile it in memory at every start (0.62 s instead
# of 0.33 s to import the server).
RUN for dir in $(python -c "import site; print(' '.join(site.getsitepackages()))"); do \
      rm -rf "$dir"/pip "$dir"/pip-* "$dir"/setuptools "$dir"/setuptools-* \
             "$dir"/_distutils_hack "$dir"/pkg_resources "$dir"/distutils-precedence.pth \
             "$dir"/wheel "$dir"/wheel-*; \
    done \
 && stdlib="$(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")" \
 && rm -rf "$stdlib"/ensurepip/_bundled /usr/local/bin/pip /usr/local/bin/pip3* \
           /usr/bin/pip /usr/bin/pip3* /usr/share/python-wheels \
 && python -m compileall -q -j 0 -x '/(test|tests|idlelib|lib2to3)/' "$stdlib" \
 && ! python -c "import pip" 2>/dev/null && ! python -c "import setuptools" 2>/dev/null
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
