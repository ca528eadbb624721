# The toolkit image: `wit` (build-queries, crawl, shard, inspect), `python -m train`,
# pyspark with a Java runtime (the Spark master and worker of docker-compose.yml run
# from it too), WordNet 3.0 and TensorBoard.
#   docker build -t wit-toolkit .
FROM python:3.11-slim-bookworm

ENV NO_ALBUMENTATIONS_UPDATE=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends wordnet-base openjdk-17-jre-headless time make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/wit
COPY pyproject.toml README.md ./
COPY wit ./wit
COPY train ./train
COPY pipelines ./pipelines
RUN pip install '.[spark]' \
 && python -c "import wit, train, pyspark, open_clip"

ENV SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/usr/local/bin/python
WORKDIR /data
CMD ["wit", "--help"]
