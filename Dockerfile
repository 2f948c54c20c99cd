# kzprobe daemon image: `kzprobe run` with /etc/kzprobe/kzprobe.toml, results in /var/lib/kzprobe.
#
#   docker build -t kzprobe .                      (any Debian-based image with python3 >= 3.11
#   docker build --build-arg BASE_IMAGE=... .       and python3-venv can be the base)
#   docker run -d --init --name kzprobe --restart on-failure:5 --stop-timeout 45 \
#     -v kzdata:/var/lib/kzprobe -v /etc/kzprobe:/etc/kzprobe:ro kzprobe
#
# --init (tini) forwards signals and reaps zombies; --stop-timeout must exceed
# service.shutdown_grace (20 s) plus the writer's close (15 s), or SIGKILL cuts the drain.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kzprobe ./kzprobe
RUN python3 -m venv /opt/kzprobe \
 && /opt/kzprobe/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/kzprobe/bin/kzprobe --version

FROM ${BASE_IMAGE}
COPY --from=build /opt/kzprobe /opt/kzprobe
COPY config/ /etc/kzprobe/
# The CLI's default --config is config/kzprobe.toml in the working directory: point it at
# /etc/kzprobe, so plain `kzprobe run` (the default CMD) reads /etc/kzprobe/kzprobe.toml.
RUN useradd --uid 10001 --user-group --no-create-home --no-log-init \
        --home-dir /var/lib/kzprobe --shell /usr/sbin/nologin kzprobe \
 && install -d -m 0750 -o kzprobe -g kzprobe /var/lib/kzprobe \
 && install -d -m 0755 /srv/kzprobe \
 && ln -s /etc/kzprobe /srv/kzprobe/config
ENV PATH=/opt/kzprobe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /srv/kzprobe
VOLUME ["/var/lib/kzprobe"]
USER 10001:10001
STOPSIGNAL SIGTERM
# service.metrics_listen defaults to 127.0.0.1:9108: reachable from inside the container only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["kzprobe"]
CMD ["run"]
