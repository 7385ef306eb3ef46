"""An independent Kafka client for the sink tests (PyPI confluent-kafka, run with
$SPANSINK_PYTHON): creates topics and reads a topic back, so the sink's messages are
checked by a client that shares none of the exporter's code.

  kafka_client.py create-topic BOOTSTRAP TOPIC PARTITIONS
  kafka_client.py consume BOOTSTRAP TOPIC IDLE_SECONDS MAX_SECONDS

`consume` reads every partition from its beginning until no message arrived for
IDLE_SECONDS (not to the high watermark: tansu's can be wrong) or MAX_SECONDS passed,
and prints one JSON line per message: partition, offset, key (text or null), headers
([name, base64 value] pairs), value (base64). Errors go to stderr with exit status 1.
"""

import base64
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=int(partitions), replication_factor=1)],
        operation_timeout=30,
        request_timeout=30,
    )
    futures[topic].result(timeout=60)


def consume(bootstrap, topic, idle_seconds, max_seconds):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "spansink-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    metadata = consumer.list_topics(topic, timeout=30)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise SystemExit(f"topic {topic!r} has no partitions: {info and info.error}")
    consumer.assign(
        [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(info.partitions)]
    )
    start = last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last >= float(idle_seconds) or now - start >= float(max_seconds):
            break
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise SystemExit(f"consume error: {message.error()}")
        last = time.monotonic()
        key = message.key()
        print(
            json.dumps(
                {
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": key.decode("utf-8") if key is not None else None,
                    "headers": [
                        [name, base64.b64encode(value or b"").decode("ascii")]
                        for name, value in (message.headers() or [])
                    ],
                    "value": base64.b64encode(message.value() or b"").decode("ascii"),
                }
            ),
            flush=False,
        )
    consumer.close()
    sys.stdout.flush()


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "create-topic":
        create_topic(*args)
    elif command == "consume":
        consume(*args)
    else:
        raise SystemExit(f"unknown command {command!r}: create-topic or consume")
