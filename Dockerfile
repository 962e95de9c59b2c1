# The worker image: `docker build -t inventory-fleet .` (docker-compose.yml builds it as inventory-fleet:local).
# Every dependency ships a manylinux wheel for CPython 3.11 on x86_64, so the slim image needs no compiler.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The dependencies from the lock (`make lock`): exact versions, each file checked against its hash. A layer of
# its own, rebuilt only when the lock changes.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements.lock
# Then the package alone. agents/topics.yaml and agents/schemas are symlinks to the top-level files, so those
# are copied beside it; the wheel carries them as package data and Settings finds them there.
COPY pyproject.toml README.md topics.yaml ./
COPY schemas ./schemas
COPY agents ./agents
RUN /opt/venv/bin/pip install --no-deps .


FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INVENTORY_DATA_DIR=/data \
    INVENTORY_WEB_HOST=0.0.0.0 \
    INVENTORY_WEB_PORT=6066

RUN groupadd --system --gid 10001 inventory \
 && useradd --system --uid 10001 --gid inventory --home-dir /app --no-create-home --shell /usr/sbin/nologin inventory \
 && mkdir -p /app /data \
 && chown inventory:inventory /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001
# INVENTORY_DATA_DIR: Quix keeps its RocksDB state in /data/state; a fresh named volume mounted here
# inherits the ownership above.
VOLUME ["/data"]
EXPOSE 6066

CMD ["python", "-m", "agents", "worker"]
