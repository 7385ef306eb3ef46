"""Sends spans to spansink with the official OpenTelemetry Python SDK and prints, as one
JSON document on stdout, the spans it created (ids, parent, name, kind, status, attributes,
event names). The end-to-end tests use it as a client nobody on this project wrote.

TLS (`--ca-file`, and `--client-cert`/`--client-key` for mTLS), request headers (`--header
authorization=Bearer ...`) and compression go through the SDK's own options. `--seconds`
keeps sending, one parent and child a few times a second, on one exporter (so one gRPC
connection) until that much time has passed: the certificate rotation test swaps the
server's certificate meanwhile. Exit status 1 if any export failed."""

import argparse
import json
import sys
import time

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
    p.add_argument("--ca-file")
    p.add_argument("--client-cert")
    p.add_argument("--client-key")
    p.add_argument("--header", action="append", default=[], help="NAME=VALUE")
    p.add_argument("--compression", choices=["none", "gzip", "deflate"], default="none")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=10.0)
    a = p.parse_args()
    if any("=" not in h for h in a.header):
        p.error("--header takes NAME=VALUE")
    if bool(a.client_cert) != bool(a.client_key):
        p.error("--client-cert and --client-key go together")
    if a.client_cert and not a.ca_file:
        p.error("--client-cert needs --ca-file (mTLS is TLS)")
    if a.protocol == "grpc" and a.compression == "deflate":
        p.error("the gRPC exporter offers gzip only")
    headers = dict(h.split("=", 1) for h in a.header)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    if a.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        compression = {"none": Compression.NoCompression, "gzip": Compression.Gzip}[a.compression]
        if a.ca_file:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(a.ca_file),
                private_key=read(a.client_key) if a.client_key else None,
                certificate_chain=read(a.client_cert) if a.client_cert else None,
            )
            exporter = OTLPSpanExporter(endpoint=a.endpoint, insecure=False, credentials=credentials,
                                        headers=headers, compression=compression, timeout=a.timeout)
        else:
            exporter = OTLPSpanExporter(endpoint=a.endpoint, insecure=True, headers=headers,
                                        compression=compression, timeout=a.timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        compression = {"none": Compression.NoCompression, "gzip": Compression.Gzip,
                       "deflate": Compression.Deflate}[a.compression]
        exporter = OTLPSpanExporter(endpoint=a.endpoint, certificate_file=a.ca_file,
                                    client_certificate_file=a.client_cert, client_key_file=a.client_key,
                                    headers=headers, compression=compression, timeout=a.timeout)

    recording = Recording(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": a.service, "deployment.environment": "e2e"}))
    provider.add_span_processor(BatchSpanProcessor(recording, max_export_batch_size=64, schedule_delay_millis=200))
    tracer = provider.get_tracer("spansink.e2e", "1.0.0")

    created = []
    started = time.monotonic()
    i = 0
    while i < a.count or time.monotonic() - started < a.seconds:
        if a.seconds:
            time.sleep(0.05)
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
        i += 1
    provider.shutdown()
    if recording.failures:
        print(f"{recording.failures} export(s) failed", file=sys.stderr)
        sys.exit(1)
    json.dump(created, sys.stdout)


if __name__ == "__main__":
    main()
