# kzprobe daemon image: `kzprobe run` with YOUR /etc/kzprobe/kzprobe.toml, results in
# /var/lib/kzprobe. The image holds no config: without one mounted, it exits 2 with one line
# ("/etc/kzprobe/kzprobe.toml: config file not found") instead of sweeping the internet from
# wherever it was started. The example config and the Citizen Lab lists are in
# /usr/share/kzprobe/config (copy them next to your config, or name them by absolute path).
#
#   docker build -t kzprobe .                      (any Debian-based image with python3 >= 3.11
#   docker build --build-arg BASE_IMAGE=... .       and python3-venv can be the base)
#   docker run -d --init --name kzprobe --restart on-failure:5 --stop-timeout 45 \
#     --cap-drop ALL --read-only --security-opt no-new-privileges \
#     -v kzdata:/var/lib/kzprobe -v /etc/kzprobe:/etc/kzprobe:ro kzprobe
#
# --init (tini) forwards signals and reaps zombies; --stop-timeout must exceed
# service.shutdown_grace (20 s) plus the writer's close (15 s), or SIGKILL cuts the drain.
# The daemon needs no capabilities and writes nothing but its volume (not even /tmp).
#
# The base is pinned by digest: python:3.12-slim-bookworm as it was at 3.12.12 (the digest
# as published for that tag; the tests build on a local Debian base and never pull it).
# Update it deliberately: docker buildx imagetools inspect python:3.12-slim-bookworm
ARG BASE_IMAGE=python:3.12.12-slim-bookworm@sha256:593bd06efe90efa80dc4eee3948be7c0fde4134606dd40d8dd8dbcade98e669c

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# kzprobe/data/kzprobe.example.toml (what `kzprobe init` writes) links to the example config.
COPY config/kzprobe.toml ./config/kzprobe.toml
COPY kzprobe ./kzprobe
RUN python3 -m venv /opt/kzprobe \
 && /opt/kzprobe/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/kzprobe/bin/kzprobe --version

FROM ${BASE_IMAGE}
COPY --from=build /opt/kzprobe /opt/kzprobe
# Reference copies only: a deployment config is mounted at /etc/kzprobe, never baked in.
COPY config/ /usr/share/kzprobe/config/
# Without --config the CLI reads ./kzprobe.toml (and refuses without one): point it at the
# mounted /etc/kzprobe/kzprobe.toml, so `kzprobe measure URL` in the container reads it.
RUN useradd --uid 10001 --user-group --no-create-home --no-log-init \
        --home-dir /var/lib/kzprobe --shell /usr/sbin/nologin kzprobe \
 && install -d -m 0750 -o kzprobe -g kzprobe /var/lib/kzprobe \
 && install -d -m 0755 /etc/kzprobe /srv/kzprobe \
 && ln -s /etc/kzprobe/kzprobe.toml /srv/kzprobe/kzprobe.toml
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
CMD ["run", "--config", "/etc/kzprobe/kzprobe.toml"]
