"""Wiring: settings -> client, ledger, sink, poller. Shared by every command."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter import __version__
from exporter.config import KEY_SHAPE, Settings, is_api_key_shaped
from exporter.errors import ApiAuthError
from exporter.logs import redact_also
from exporter.mapping.attributes import SCOPE_NAME
from exporter.mapping.spans import MappingOptions
from exporter.poller import Poller, PollResult, PollSettings
from exporter.sink.base import SpanSink
from exporter.sink.otlp_metrics import OtlpMetrics, build_metric_exporter
from exporter.source.client import OrchestraClient
from exporter.source.retry import RetryPolicy
from exporter.state import Ledger
from exporter.telemetry import Telemetry

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "orchestra"


def build_resource() -> Resource:
    """SDK defaults and OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; service 'orchestra'.

    The spans describe Orchestra's workflows, so that is the service a Jaeger user looks
    for; the environment variables still win.
    """
    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def mapping_options(settings: Settings) -> MappingOptions:
    return MappingOptions(
        resource=build_resource(),
        scope=InstrumentationScope(SCOPE_NAME, __version__),
        capture_content=settings.capture_content,
        content_max_length=settings.content_max_length,
        openinference=settings.openinference,
    )


@dataclass
class Runtime:
    settings: Settings
    client: OrchestraClient
    ledger: Ledger
    sink: SpanSink
    poller: Poller
    _api_key: str = ""
    _refused_key: str = ""
    _auth_failing_logged: bool = False

    @property
    def telemetry(self) -> Telemetry:
        return self.poller.telemetry

    def _set_auth_failing(self, failing: bool) -> None:
        self.telemetry.state.auth_failing = failing
        self.telemetry.api_auth_failing.set(int(failing))

    async def close(self) -> None:
        await self.client.aclose()
        self.sink.shutdown()
        if self.telemetry.otlp is not None:
            self.telemetry.otlp.shutdown()  # a last push of the metrics
        self.ledger.close()

    async def poll_and_log(self) -> PollResult:
        if self.telemetry.state.auth_failing:
            self._reload_key_file()
        result = await self.poller.poll()
        self._log_result(result)
        return result

    def _reload_key_file(self) -> None:
        """A rejected key may have been rotated in its file: pick the new one up."""
        if self.settings.api_key_file is None:
            return
        try:
            key = self.settings.api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot re-read ORCHESTRA_API_KEY_FILE: %s", type(exc).__name__)
            return
        if key and not is_api_key_shaped(key):
            if key != self._refused_key:  # said once per content, not every poll
                self._refused_key = key
                log.warning("ORCHESTRA_API_KEY_FILE changed but holds no key: %s", KEY_SHAPE)
            return
        if key and key != self._api_key:
            redact_also(key)
            self._api_key = key
            self.client.set_api_key(key)
            log.info("ORCHESTRA_API_KEY_FILE changed: using the new key")

    async def discover(self) -> None:
        try:
            await self.poller.discover()
        except ApiAuthError as exc:
            self._log_auth(exc)

    def _log_result(self, result: PollResult) -> None:
        if result.auth_failed:
            self._log_auth(None)
        elif self._auth_failing_logged and not result.api_failed:
            self._auth_failing_logged = False
            self._set_auth_failing(False)
            log.warning("the API accepts the key again; polling resumed")
        level = logging.WARNING if result.errors else logging.INFO
        log.log(level, result.summary())
        for error in dict.fromkeys(result.errors):
            log.log(level, "  %s", error)

    def _log_auth(self, exc: ApiAuthError | None) -> None:
        """Said once per outage: the key is wrong until someone fixes it."""
        self._set_auth_failing(True)
        if self._auth_failing_logged:
            return
        self._auth_failing_logged = True
        log.error(
            "the Orchestra API rejected the API key%s; check ORCHESTRA_API_KEY or "
            "ORCHESTRA_API_KEY_FILE. The daemon keeps polling and recovers by itself "
            "once the key works.",
            f" ({exc})" if exc else "",
        )


def open_runtime(
    settings: Settings, sink: SpanSink, api_key: str, *, push_metrics: bool = True
) -> Runtime:
    retry = RetryPolicy(max_delay=min(30.0, settings.poll_interval))
    client = OrchestraClient(
        settings.base_url,
        api_key,
        timeout=settings.api_timeout,
        max_concurrency=settings.api_concurrency,
        retry=retry,
        verify=str(settings.ca_file) if settings.ca_file else True,
    )
    ledger = Ledger(settings.state_path)
    telemetry = Telemetry(settings.metrics_max_workflows, settings.metrics_max_nodes)
    options = mapping_options(settings)
    if push_metrics and settings.otlp_enabled and settings.otlp_metrics:
        telemetry.otlp = OtlpMetrics(
            telemetry.book,
            telemetry.state,
            options.resource,
            build_metric_exporter(settings.otlp_protocol),
        )
    telemetry.watch_client(lambda: client.stats)
    poller = Poller(
        client,
        ledger,
        sink,
        options,
        PollSettings(
            workflows=settings.workflows,
            lookback_s=settings.lookback,
            shard=settings.shard,
            export_batch_size=settings.export_batch_size,
            retention_s=settings.retention,
        ),
        telemetry=telemetry,
    )
    client.on_rejected = poller.report_rejected
    return Runtime(settings, client, ledger, sink, poller, _api_key=api_key)
