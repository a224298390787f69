"""Wiring: settings -> client, ledger, sink, poller. Shared by every command."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from exporter import __version__
from exporter.config import KEY_SHAPE, Settings, is_api_key_shaped
from exporter.errors import ApiAuthError
from exporter.logs import Condition, redact_also
from exporter.mapping.options import MappingOptions, default_scope
from exporter.poller import Poller, PollSettings
from exporter.results import PollResult
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
        scope=default_scope(__version__),
        capture_content=settings.capture_content,
        content_max_length=settings.content_max_length,
        openinference=settings.openinference,
        genai_provider=settings.genai_provider,
        span_names=settings.span_names,
        traceparent_input=settings.traceparent_input,
        traceparent_mode=settings.traceparent_mode,
        prices=settings.price_table,
        wait_spans=settings.wait_spans,
        failure_logs=settings.otlp_logs,
        exception_signal=settings.exception_signal,
    )


@dataclass
class Runtime:
    """Everything one command needs, opened from the settings by `open_runtime`.

    Owns the client, the ledger, the sink and the poll cycle, and closes them in that
    order's reverse. Used by every command that talks to the API; `poll_and_log` is the
    scheduler's poll job.
    """

    settings: Settings
    client: OrchestraClient
    ledger: Ledger
    sink: SpanSink
    poller: Poller
    _api_key: str = ""
    _auth: Condition = field(default_factory=lambda: Condition(log))
    _ledger_condition: Condition = field(default_factory=lambda: Condition(log))
    _last_errors: frozenset[str] = frozenset()
    _refused_key: str = ""

    @property
    def telemetry(self) -> Telemetry:
        return self.poller.telemetry

    async def close(self) -> None:
        await self.client.aclose()
        self.poller.close()
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
            await self.poller.workflows.refresh()
        except ApiAuthError:
            self._auth_changed(failing=True)

    def _log_result(self, result: PollResult) -> None:
        if result.auth_failed:
            self._auth_changed(failing=True)
        elif not result.api_failed and not self.poller.schedule.failing():
            # Only once every failed listing was asked again: the ticks between the
            # retries may poll nothing, which says nothing of the key.
            self._auth_changed(failing=False)
        self._ledger_condition.update(
            result.ledger_failed,
            started="the state file cannot be used; polling goes on and nothing is lost, "
            "but nothing is exported until it works again (see docs/design.md, Recovery)",
            ended="the state file works again",
        )
        level = logging.WARNING if result.errors else logging.INFO
        log.log(level, result.summary())
        errors = frozenset(result.errors)
        # Said when they appear: the same failure poll after poll is one line, not one a poll.
        for error in dict.fromkeys(result.errors):
            if error not in self._last_errors:
                log.log(level, "  %s", error)
        if errors or result.requests:  # a poll that asked nothing did not see them go
            self._last_errors = errors

    def _auth_changed(self, *, failing: bool) -> None:
        self.telemetry.state.auth_failing = failing
        self.telemetry.api_auth_failing.set(int(failing))
        self._auth.update(
            failing,
            started="the Orchestra API rejected the API key; check ORCHESTRA_API_KEY or "
            "ORCHESTRA_API_KEY_FILE. The daemon keeps polling and recovers by itself once "
            "the key works.",
            ended="the API accepts the key again; polling resumed",
            level=logging.ERROR,
        )


def open_runtime(
    settings: Settings, sink: SpanSink, api_key: str, *, push_metrics: bool = True
) -> Runtime:
    retry = RetryPolicy(
        max_delay=min(30.0, settings.poll_interval),
        max_retry_after=settings.api_max_retry_after,
    )
    client = OrchestraClient(
        settings.base_url,
        api_key,
        timeout=settings.api_timeout,
        max_concurrency=settings.api_concurrency,
        retry=retry,
        verify=str(settings.ca_file) if settings.ca_file else True,
        max_response_bytes=settings.api_max_response_bytes,
        max_records=settings.api_max_records,
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
    telemetry.watch_client(lambda: client.stats, client.pause_remaining)
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
            schedule=settings.schedule,
        ),
        telemetry=telemetry,
    )
    client.on_rejected = poller.reporter.rejected
    return Runtime(settings, client, ledger, sink, poller, _api_key=api_key)
