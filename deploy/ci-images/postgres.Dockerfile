# Stand-in for postgres:16-alpine (Debian's PostgreSQL 15): same contract — POSTGRES_PASSWORD
# (required), POSTGRES_USER, POSTGRES_DB; a cluster in PGDATA made on first start; password
# auth over the network, trust on the local socket; pg_isready on PATH.
ARG BASE
FROM ${BASE}
LABEL org.leviathan.ci-stand-in=1
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p "$PGDATA" /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
