# CIT service: one image for the API processes, the job worker and the one-off migration.
# Configure with CIT_* variables (README); for PostgreSQL set
# CIT_DATABASE_URL=postgresql+psycopg://user:pass@host:5432/db. compose.yaml runs it all.

# Build stage: the dependencies, in a virtualenv that the runtime stage copies whole.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY nlp ./nlp
# Install the project to pull in exactly its dependencies, then drop the project itself: the
# runtime stage runs it from its source tree (it finds migrations/ and codebooks/ beside app/).
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/pip uninstall --yes cit-service

# Runtime stage: no compiler, no build files, a user without privileges.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/cit \
    CIT_ENV=production \
    CIT_DATABASE_URL=sqlite:////data/cit.db \
    CIT_DATA_DIR=/data
RUN useradd --system --uid 10001 --home-dir /srv/cit cit \
    && mkdir -p /data && chown cit /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/cit
COPY alembic.ini ./
COPY migrations ./migrations
COPY codebooks ./codebooks
COPY nlp ./nlp
COPY app ./app
USER 10001
VOLUME ["/data"]
EXPOSE 8000
# Liveness; orchestrators that know readiness should probe /readyz (503 while the database is
# away or behind the migrations).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["python", "-m", "app.cli"]
# The API (CIT_SECRET_KEY must be given). Migrations run once, before: `db upgrade` (compose.yaml
# has a service for it); `worker` runs a job worker from the same image.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
