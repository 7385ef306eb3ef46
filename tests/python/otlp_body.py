"""Writes one OTLP/HTTP protobuf body (an ExportTraceServiceRequest) to --out, built with
the opentelemetry-proto Python package (installed with the SDK's OTLP exporters), so the
curl tests post bytes nobody on this project encoded. Prints the span ids (hex) as JSON.
Random ids: each call makes new spans."""

import argparse
import json
import os
import sys
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--spans", type=int, default=5)
    p.add_argument("--service", default="curl-e2e")
    a = p.parse_args()

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=a.service)))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "spansink.e2e.curl"
    trace_id = os.urandom(16)
    now = time.time_ns()
    ids = []
    for i in range(a.spans):
        span_id = os.urandom(8)
        scope_spans.spans.append(Span(
            trace_id=trace_id, span_id=span_id, name=f"curl-{i}", kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now, end_time_unix_nano=now + 1000,
            attributes=[KeyValue(key="i", value=AnyValue(int_value=i))]))
        ids.append(span_id.hex())
    with open(a.out, "wb") as f:
        f.write(request.SerializeToString())
    json.dump(ids, sys.stdout)


if __name__ == "__main__":
    main()
