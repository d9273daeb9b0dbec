# gmm-service: scikit-learn Gaussian mixtures and k-means over HTTP.
#
#   docker build -t gmm-service .
#   docker run -p 8000:8000 -v gmm-store:/data gmm-service
#   docker build --build-arg LOCK_FILE=requirements-cluster.lock -t gmm-service:cluster .
#
# Every locked dependency ships manylinux wheels, so the slim image needs no
# compiler and no apt packages.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# A fixed uid/gid: a bind-mounted store can be chowned to it from the host, and the
# numeric USER below lets Kubernetes verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 gmm \
    && useradd --system --uid 10001 --gid gmm --create-home --home-dir /home/gmm gmm \
    && mkdir -p /data \
    && chown gmm:gmm /data

WORKDIR /app
# The dependencies from a lock, each pin checked against its hash, so every build
# installs the same versions (`make lock` regenerates both from pyproject.toml). Their
# layer comes first so that a code change does not reinstall them. LOCK_FILE picks
# the lock: requirements.lock, the runtime and the grpc extra (grpcio, protobuf: the
# default image serves gRPC once GMM_GRPC_PORT is set), or requirements-cluster.lock,
# with the s3, dask and postgres extras too (boto3, dask, distributed, psycopg) that
# compose's cluster profile builds with (--build-arg LOCK_FILE=...).
ARG LOCK_FILE=requirements.lock
COPY requirements.lock requirements-cluster.lock ./
RUN pip install --no-cache-dir --require-hashes -r "${LOCK_FILE}"
# Then the package alone (and the README its metadata points to): --no-deps, so that
# nothing outside the lock is resolved.
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir --no-deps .

# Declared after the chown: a fresh named volume copies /data's owner from the image.
VOLUME ["/data"]

ENV GMM_HOST=0.0.0.0 \
    GMM_PORT=8000 \
    GMM_STORE_DIR=/data

USER 10001:10001
# 8001: the Open Inference Protocol over gRPC, when GMM_GRPC_PORT=8001 (as Triton's ports).
EXPOSE 8000 8001

# slim has no curl: ask /healthz with the standard library (non-2xx raises, exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GMM_PORT', '8000') + '/healthz', timeout=4)"]

CMD ["python", "-m", "service"]
