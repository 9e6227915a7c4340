"""Sends a known multi-service topology to graphgen with the official OpenTelemetry Python SDK.

Usage: send_topology.py grpc|http ENDPOINT TRACES

Each trace: web (root SERVER) -> CLIENT -> api (SERVER, error on odd traces) -> CLIENT to
`inventory-db` (db.system=postgresql, db.name=inventory) and a PRODUCER -> worker CONSUMER.
Every service has its own TracerProvider (its own resource), context crosses "the wire"
through W3C traceparent headers, as between real processes.
"""

import sys

from opentelemetry import context, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def provider(service, protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(BatchSpanProcessor(exporter))
    return p


def main():
    protocol, endpoint, traces = sys.argv[1], sys.argv[2], int(sys.argv[3])
    providers = {s: provider(s, protocol, endpoint) for s in ["web", "api", "worker"]}
    tracer = {s: p.get_tracer("send_topology") for s, p in providers.items()}

    for i in range(traces):
        with tracer["web"].start_as_current_span("GET /", kind=SpanKind.SERVER):
            with tracer["web"].start_as_current_span("GET /api", kind=SpanKind.CLIENT):
                headers = {}
                inject(headers)
        token = context.attach(extract(headers))
        try:
            with tracer["api"].start_as_current_span("GET /api", kind=SpanKind.SERVER) as server:
                with tracer["api"].start_as_current_span(
                    "SELECT inventory",
                    kind=SpanKind.CLIENT,
                    attributes={"db.system": "postgresql", "db.name": "inventory", "peer.service": "inventory-db"},
                ):
                    pass
                with tracer["api"].start_as_current_span(
                    "orders publish", kind=SpanKind.PRODUCER, attributes={"messaging.system": "kafka"}
                ):
                    message = {}
                    inject(message)
                if i % 2 == 1:
                    server.set_status(Status(StatusCode.ERROR, "boom"))
        finally:
            context.detach(token)
        token = context.attach(extract(message))
        try:
            with tracer["worker"].start_as_current_span("orders process", kind=SpanKind.CONSUMER):
                pass
        finally:
            context.detach(token)

    for p in providers.values():
        assert p.force_flush(10_000), "flush failed"
        p.shutdown()
    print(f"sent {traces} traces over {protocol}")


if __name__ == "__main__":
    main()
