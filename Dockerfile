# Leviathan control plane image: one image, both tiers (`leviathan-cp ingest|consumer|...`).
#
# The install steps below are the same ones tests/deploy/test_image_steps.py runs without a
# Docker engine (build the project wheel, install it into a fresh venv, start both tiers from
# that venv and hit /healthz). Keep the two in step: change one, change the other.

# --- builder: build the wheels (the only stage with a compiler-capable toolchain) ---
FROM python:3.11-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY consumer ./consumer
COPY storage ./storage
COPY leviathan_cp ./leviathan_cp
# Step 1 (test: "pip wheel"): the project wheel plus every dependency wheel.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: slim, no build tools, non-root ---
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    LEVIATHAN_NDJSON_DIR=/data/ndjson
# Step 2 (test: "fresh venv"): a venv holding only the built wheels, installed offline.
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
