# Stand-in for redis:7.4-alpine (Debian's redis-server 7.0): same entrypoint contract — a first
# argument starting with "-" or ending in ".conf" is given to redis-server, which runs as the
# redis user in /data with protected mode off (the upstream image's build default).
ARG BASE
FROM ${BASE}
LABEL org.leviathan.ci-stand-in=1
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
