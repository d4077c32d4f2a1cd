# Stand-in for nginx:1.27-alpine (Debian's nginx-light 1.22): /etc/nginx/conf.d/*.conf is
# included (the compose file mounts its server block there), logs go to the container's
# stdout/stderr, wget is there for the healthcheck.
ARG BASE
FROM ${BASE}
LABEL org.leviathan.ci-stand-in=1
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
