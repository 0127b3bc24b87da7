# The generic turbolift worker image. One image serves every program: code
# travels to the worker as bundles over gRPC, so nothing here is rebuilt per program.
#
#   docker build -t turbolift-worker:0.1.0 .
#
# A worker accepts a bundle only if its Python minor version and the exact
# versions of the third-party packages the bundle imports match the caller's:
# build your own image FROM this one and pip-install your program's pinned
# dependencies (see "Running on Kubernetes" in the README). Another Python:
#   docker build --build-arg PYTHON_IMAGE=python:3.12.11-slim-bookworm -t turbolift-worker:0.1.0-py3.12 .
# For a byte-for-byte reproducible base, pin it by digest as well:
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
# A base whose Python is the distribution's own (Debian's python3 + python3-pip,
# as tests/test_container.py builds it) needs --build-arg PIP_BREAK_SYSTEM_PACKAGES=1.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TURBOLIFT_CACHE_DIR=/var/cache/turbolift

# A fixed non-root uid/gid: the Kubernetes manifests run as 10001 too.
RUN groupadd --system --gid 10001 turbolift \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/turbolift \
        --shell /usr/sbin/nologin turbolift \
 && install -d -o 10001 -g 10001 -m 0750 /var/cache/turbolift

# Only what `pip install .` needs (.dockerignore keeps the rest out of the context).
COPY pyproject.toml setup.cfg README.md /tmp/turbolift-src/
COPY turbolift /tmp/turbolift-src/turbolift

# How pip reaches the package index, for the build only (ARGs are not kept in
# the image's environment); the defaults are pip's own. Behind a mirror or an
# intercepting proxy, give its URL and mount a CA bundle into the build (podman
# build -v; docker build has no -v), e.g.:
#   podman build -v /etc/ssl/certs/ca-certificates.crt:/run/build-ca.pem:ro \
#       --build-arg PIP_CERT=/run/build-ca.pem --build-arg PIP_INDEX_URL=https://mirror.example/simple .
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_TRUSTED_HOST=
ARG PIP_CERT=
ARG PIP_BREAK_SYSTEM_PACKAGES=0
# (with the metrics extra: `turbolift worker --metrics-port` works in the image)
RUN python3 -m pip install '/tmp/turbolift-src[metrics]' && rm -rf /tmp/turbolift-src

USER 10001:10001
WORKDIR /home/turbolift
EXPOSE 50051
# A worker off loopback refuses to start without a token; Kubernetes mounts it
# at this path from a Secret (`turbolift kube manifests` shows how).
ENTRYPOINT ["turbolift", "worker"]
CMD ["--listen", "0.0.0.0:50051", "--token-file", "/var/run/turbolift/token"]
