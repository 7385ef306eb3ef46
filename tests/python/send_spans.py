"""Sends spans to spansink with the official OpenTelemetry Python SDK and prints, as one
JSON document on stdout, the spans it created (ids, parent, name, kind, status, attributes,
event names). The end-to-end tests use it as a client nobody on this project wrote."""

import argparse
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class Recording(SpanExporter):
    """Wraps the OTLP exporter and fails loudly if any export is not a success."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result != SpanExportResult.SUCCESS:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", choices=["grpc", "http"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--service", default="python-e2e")
    a = p.parse_args()

    if a.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=a.endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=a.endpoint)

    recording = Recording(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": a.service, "deployment.environment": "e2e"}))
    provider.add_span_processor(BatchSpanProcessor(recording, max_export_batch_size=64, schedule_delay_millis=200))
    tracer = provider.get_tracer("spansink.e2e", "1.0.0")

    created = []
    for i in range(a.count):
        with tracer.start_as_current_span(f"parent-{i}", kind=trace.SpanKind.SERVER) as parent:
            parent.set_attribute("http.route", "/orders/{id}")
            parent.set_attribute("http.status_code", 200 + i)
            parent.set_attribute("sample.ratio", 0.25)
            parent.set_attribute("retry", i % 2 == 0)
            parent.add_event("accepted", {"queue.depth": i})
            with tracer.start_as_current_span(f"child-{i}", kind=trace.SpanKind.CLIENT) as child:
                child.set_attribute("db.system", "postgresql")
                child.set_status(trace.Status(trace.StatusCode.ERROR, "boom"))
            for span in (parent, child):
                ctx = span.get_span_context()
                created.append({
                    "trace_id": format(ctx.trace_id, "032x"),
                    "span_id": format(ctx.span_id, "016x"),
                    "parent_span_id": format(span.parent.span_id, "016x") if span.parent else "",
                    "name": span.name,
                    "kind": span.kind.name.lower(),
                    "status_code": span.status.status_code.name.lower(),
                    "attributes": dict(span.attributes),
                    "events": [e.name for e in span.events],
                })
    provider.shutdown()
    if recording.failures:
        print(f"{recording.failures} export(s) failed", file=sys.stderr)
        sys.exit(1)
    json.dump(created, sys.stdout)


if __name__ == "__main__":
    main()
