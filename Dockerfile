# deepmem: the bot, the nightly trainer and the CLI in one image. Offline by default.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    DEEPMEM_HOME=/data \
    DEEPMEM_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY bot ./bot
COPY daemon ./daemon
# the CPU build of torch first, from PyTorch's CPU index, so pip does not pull a CUDA build
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir .

RUN useradd --create-home --uid 10001 deepmem && mkdir -p /data && chown deepmem /data
USER deepmem
VOLUME ["/data"]
EXPOSE 8765
ENTRYPOINT ["deepmem"]
CMD ["serve"]
