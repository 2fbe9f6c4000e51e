# lockgate's operator image. Built by hack/build-image, which stages the context (wheels/: lockgate
# and its dependencies at the versions of the tested .venv, plus pip's own wheel) and passes
# BASE_IMAGE, a Debian bookworm + python3 image made locally from Debian's packages
# (hack/build-base-image, tagged by content hash). No network during the build.
#
# Two stages: `build` installs into a virtualenv with pip run from its wheel (nothing of pip,
# setuptools or the wheels stays); the final stage is the base image plus that virtualenv,
# run as an unprivileged user, and works with a read-only root filesystem.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS build
# Dependencies first, in their own layer: a change to lockgate alone reuses it.
COPY wheels/deps/ /wheels/deps/
RUN python3 -m venv --without-pip /opt/lockgate \
 && /opt/lockgate/bin/python "$(ls /wheels/deps/pip-*.whl)/pip" install \
      --no-index --find-links /wheels/deps --no-cache-dir --disable-pip-version-check \
      --require-virtualenv --only-binary :all: --requirement /wheels/deps/requirements.txt \
# The kubernetes client's asyncio twin (kubernetes.aio, about 68 MB with bytecode) is never
# imported: lockgate uses the synchronous client, kopf its own aiohttp client.
 && rm -rf /opt/lockgate/lib/python3.11/site-packages/kubernetes/aio
COPY wheels/lockgate/ /wheels/lockgate/
RUN /opt/lockgate/bin/python "$(ls /wheels/deps/pip-*.whl)/pip" install \
      --no-index --no-deps --no-cache-dir --disable-pip-version-check --require-virtualenv \
      /wheels/lockgate/lockgate-*.whl \
# The operator loads docker-py and paramiko only when a Docker fleet first connects: import
# them here too (hosts.ssh_transport imports both), so a broken install fails the build.
 && /opt/lockgate/bin/python -c 'import lockgate.controller, lockgate.cli.main, lockgate.hosts.ssh_transport' \
 && /opt/lockgate/bin/lockgate --version

FROM ${BASE_IMAGE}
# kopf names its identity after the user (getpass.getuser) unless told one, so the uid needs a passwd
# entry; USER also covers a cluster that runs the Pod under another, arbitrary uid.
RUN groupadd --system --gid 65532 lockgate \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin lockgate
COPY --from=build /opt/lockgate /opt/lockgate
ENV PATH=/opt/lockgate/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    USER=lockgate
# Numeric, so a Pod's runAsNonRoot can verify it.
USER 65532:65532
# kopf's health endpoint (--liveness) and the operator's metrics (LOCKGATE_METRICS_PORT).
EXPOSE 8080 9108
ENTRYPOINT ["lockgate"]
CMD ["operator", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
