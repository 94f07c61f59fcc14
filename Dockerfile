# syntax=docker/dockerfile:1
# evtopup: one image for the three services and the command line.
#   docker build -t evtopup .
#   docker run --rm evtopup --help
# The default command runs all three services in one container (public ports 8080, 8081, 8082;
# /healthz, /readyz and /metrics on the internal ports 9080, 9081, 9082); production runs one service
# per container: `evtopup run page|payments|crediting`. The configuration is config/demo.toml
# (deployment = "demo": the sandbox processor, no money taken) until you mount your own.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
# The page's catalogues compiled into the package (Babel is all the compiler needs).
RUN pip install --no-cache-dir 'Babel>=2.14,<3' && python -m services.page.catalogs compile \
    && pip install --no-cache-dir '.[pdf]'

FROM python:3.11-slim
# tini as PID 1 forwards SIGTERM to `evtopup` and reaps the child processes of `run all`; Pango and
# Noto's fonts make the page's PDF receipts, in every script it speaks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libpango-1.0-0 libpangoft2-1.0-0 fonts-noto-core \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 evtopup \
    && useradd --system --uid 10001 --gid evtopup --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin evtopup
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVTOPUP_CONFIG=/app/config/demo.toml \
    EVTOPUP__SERVICES__HOST=0.0.0.0 \
    EVTOPUP__SERVICES__INTERNAL_HOST=0.0.0.0 \
    EVTOPUP_HEALTHCHECK_PORTS="9080 9081 9082"
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# Read-only for the service user: the configuration is data, not state.
COPY config/ /app/config/
USER 10001:10001
# Only the public ports: `docker run -P` publishes what is exposed, and the internal ports (health and
# metrics, listening on the container's network for Prometheus) must never be published.
EXPOSE 8080 8081 8082
# Liveness of every internal port in EVTOPUP_HEALTHCHECK_PORTS (all three for `run all`; set it to the
# one internal port when running a single service, e.g. 9080 for page). docker-compose and Kubernetes
# use their own probes on /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request as u; [u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4) for p in os.environ['EVTOPUP_HEALTHCHECK_PORTS'].split()]"
ENTRYPOINT ["tini", "--", "evtopup"]
CMD ["run", "all"]
