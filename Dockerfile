# CPU image by default; a CUDA base is selected with
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
# The package is installed exactly as `make install` does it (pip install -e ".[test]" from pyproject.toml).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip make && rm -rf /var/lib/apt/lists/*; \
    elif ! command -v make >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /opt/strokeseg
COPY pyproject.toml README.md Makefile ./
COPY src ./src
COPY bundles ./bundles
COPY configs ./configs
COPY tests ./tests
RUN make install

ENTRYPOINT ["/opt/strokeseg/.venv/bin/strokeseg"]
CMD ["demo", "--out", "/data/demo_out"]
