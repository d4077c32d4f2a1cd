# Leviathan control plane image: one image, both tiers (`leviathan-cp ingest|consumer|...`).
#
# The install steps below are the same ones tests/deploy/test_image_steps.py runs without a
# Docker engine (wheels of the locked dependencies and of the project, install them into a
# fresh venv, start both tiers from that venv and hit /healthz). Keep the two in step: change
# one, change the other. Dependencies come from requirements/runtime.txt, pinned with hashes
# (refreshed by scripts/lock), so two builds a week apart install the same releases.

# --- builder: build the wheels (the only stage with a compiler-capable toolchain) ---
FROM python:3.11-slim AS builder
WORKDIR /src
# Step 1 (test: "pip wheel"): a wheel of every locked dependency, each file checked against
# the lock's hashes (a layer of its own: it is rebuilt only when the lock changes) ...
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN python -m pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels \
    -r requirements/runtime.txt
# ... then the project's own wheel, resolving nothing again.
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY query ./query
COPY webcore ./webcore
COPY consumer ./consumer
COPY storage ./storage
COPY leviathan_cp ./leviathan_cp
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- runtime: slim, no build tools, non-root ---
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    LEVIATHAN_NDJSON_DIR=/data/ndjson
# Step 2 (test: "fresh venv"): a venv holding only the built wheels, installed offline
# (so only the locked releases can satisfy the project's requirements).
COPY --from=builder /wheels /wheels
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels leviathan-control-plane \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin leviathan \
    && mkdir -p /data/ndjson && chown -R 10001:10001 /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000 8001
# Step 3 (test: "healthz"): ingest answers on LEVIATHAN_API_PORT (8000), the consumer's health
# server on LEVIATHAN_CONSUMER_PORT (8001); the probe tries the port of the running tier.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u\nfor p in (os.environ.get('LEVIATHAN_API_PORT','8000'), os.environ.get('LEVIATHAN_CONSUMER_PORT','8001')):\n    try:\n        u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=2); sys.exit(0)\n    except Exception:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["leviathan-cp"]
CMD ["ingest"]
