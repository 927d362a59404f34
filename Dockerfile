# The signaling server image. The server holds no call secrets: it routes sealed envelopes.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends portaudio19-dev gcc libopus0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY signaling ./signaling
COPY voice ./voice
RUN pip install --no-cache-dir .
RUN useradd --system --home /var/lib/signaling signaling && mkdir -p /var/lib/signaling \
    && chown signaling /var/lib/signaling
USER signaling
EXPOSE 8765 8766
ENTRYPOINT ["voice-signaling"]
