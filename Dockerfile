# CIT service: one image for the API (and, later, workers). Configure with CIT_* variables;
# for PostgreSQL set CIT_DATABASE_URL=postgresql+psycopg://user:pass@host:5432/db.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CIT_ENV=production \
    CIT_DATABASE_URL=sqlite:////data/cit.db \
    CIT_DATA_DIR=/data

WORKDIR /srv/cit
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY nlp ./nlp
COPY codebooks ./codebooks
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 --home-dir /srv/cit cit \
    && mkdir -p /data && chown cit /data

USER 10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"]
# Migrate, then serve. CIT_SECRET_KEY must be provided at run time.
CMD ["sh", "-c", "cit db upgrade && exec cit serve --host 0.0.0.0 --port 8000"]
