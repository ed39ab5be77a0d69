# cicd server image: web, worker and scheduler from one image (pick the process with the command).
#   docker build -t cicd .
#   docker run -p 8000:8000 -v cicd-data:/data cicd                       # embedded: everything
#   docker run -e DATABASE_URL=... -e REDIS_URL=... cicd celery -A cicd worker   # a scaled worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CICD_DATA_DIR=/data \
    CICD_BIND_HOST=0.0.0.0 \
    CICD_PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends git bubblewrap haproxy \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY cicd ./cicd
COPY pipelines ./pipelines
COPY runs ./runs
COPY runners ./runners
COPY webhooks ./webhooks
COPY deployments ./deployments
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN pip install --no-cache-dir -e . \
    && useradd --create-home --uid 1000 cicd \
    && mkdir -p /data && chown cicd /data

USER cicd
VOLUME ["/data"]
EXPOSE 8000
CMD ["cicd", "serve"]
