# Stand-in for python:3.11-slim: Debian bookworm's Python 3.11 with venv and pip, `python` on
# PATH, and the CI host's CA bundle so `pip wheel` in the project's Dockerfile reaches the index.
ARG BASE
FROM ${BASE}
LABEL org.leviathan.ci-stand-in=1
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
COPY host-ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
