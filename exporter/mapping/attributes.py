"""Every attribute and event name this exporter writes, in one place.

Two families live here:

* OpenTelemetry semantic conventions (``gen_ai.*``, ``error.type``, ``exception.*``,
  ``service.name``): their meaning is fixed by the spec, so backends and dashboards
  that know GenAI spans (Tempo, Jaeger, Phoenix, Grafana) render them without help.
* Our own ``orchestra.*`` names, for what no convention covers (ids, raw statuses,
  node types). They are part of the trace contract in docs/design.md ("Trace shape").
"""

from __future__ import annotations

from typing import Final

# --- OpenTelemetry semantic conventions -------------------------------------------
# Service / resource
SERVICE_NAME: Final = "service.name"

# Errors (stable)
ERROR_TYPE: Final = "error.type"
EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"

# GenAI (development status in semconv; names as of semantic-conventions 1.37+)
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_TOOL_NAME: Final = "gen_ai.tool.name"
GEN_AI_TOOL_TYPE: Final = "gen_ai.tool.type"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"  # on the token usage metric only
# Content (opt-in only: prompts and outputs may hold personal data)
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"

# Values of gen_ai.operation.name
OP_CHAT: Final = "chat"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"

# --- Ours: orchestra.* ---------------------------------------------------------------
WORKFLOW_ID: Final = "orchestra.workflow.id"
WORKFLOW_NAME: Final = "orchestra.workflow.name"
RUN_ID: Final = "orchestra.run.id"
RUN_STATUS: Final = "orchestra.run.status"
STEP_ID: Final = "orchestra.step.id"
STEP_STATUS: Final = "orchestra.step.status"
NODE_ID: Final = "orchestra.node.id"
NODE_TYPE: Final = "orchestra.node.type"
INTEGRATION_APP: Final = "orchestra.integration.app"
OUTCOME: Final = "orchestra.outcome"  # on the workflow metrics only
# Where the time went (seconds, double): the wait before a step, and on the root the time
# no step was running. The critical path: true on its steps, its node ids on the root.
STEP_WAIT: Final = "orchestra.step.wait"
STEP_CRITICAL_PATH: Final = "orchestra.step.critical_path"
RUN_OVERHEAD: Final = "orchestra.run.overhead"
RUN_CRITICAL_PATH: Final = "orchestra.run.critical_path"
QUEUE_EVENT: Final = "orchestra.step.queue"  # the moment a step became runnable
WAIT_SPAN_NAME: Final = "wait"  # ORCHESTRA_WAIT_SPANS: the gap before a step as a span
# Cost of a model step (and on the root, of the run), from ORCHESTRA_PRICES.
COST_TOTAL: Final = "orchestra.cost.total"
COST_INPUT: Final = "orchestra.cost.input"
COST_OUTPUT: Final = "orchestra.cost.output"
COST_CURRENCY: Final = "orchestra.cost.currency"
# Content of steps that are neither model nor integration (code, retrieval, ...): opt-in.
STEP_INPUT: Final = "orchestra.step.input"
STEP_OUTPUT: Final = "orchestra.step.output"
# Run-level content (the workflow's input variables and its final output): opt-in.
RUN_INPUT: Final = "orchestra.run.input"
RUN_OUTPUT: Final = "orchestra.run.output"

# Values of orchestra.node.type inferred from step records (docs/design.md, "Node types").
NODE_TYPE_MODEL: Final = "model"
NODE_TYPE_INTEGRATION: Final = "integration"
NODE_TYPE_CODE: Final = "code"
NODE_TYPE_UNKNOWN: Final = "unknown"

# --- OpenInference (Arize Phoenix), mirrored only with ORCHESTRA_OPENINFERENCE=true ------
# Phoenix reads these names, not the GenAI conventions, to show LLM and tool spans.
OI_SPAN_KIND: Final = "openinference.span.kind"
OI_LLM_MODEL_NAME: Final = "llm.model_name"
OI_LLM_TOKENS_PROMPT: Final = "llm.token_count.prompt"
OI_LLM_TOKENS_COMPLETION: Final = "llm.token_count.completion"
OI_LLM_TOKENS_TOTAL: Final = "llm.token_count.total"
OI_LLM_TOKENS_CACHE_READ: Final = "llm.token_count.prompt_details.cache_read"
OI_LLM_TOKENS_REASONING: Final = "llm.token_count.completion_details.reasoning"
OI_LLM_PROVIDER: Final = "llm.provider"
OI_LLM_COST_PROMPT: Final = "llm.cost.prompt"
OI_LLM_COST_COMPLETION: Final = "llm.cost.completion"
OI_LLM_COST_TOTAL: Final = "llm.cost.total"
OI_TOOL_NAME: Final = "tool.name"
OI_INPUT_VALUE: Final = "input.value"
OI_OUTPUT_VALUE: Final = "output.value"
OI_INPUT_MIME_TYPE: Final = "input.mime_type"
OI_OUTPUT_MIME_TYPE: Final = "output.mime_type"
OI_KIND_LLM: Final = "LLM"
OI_KIND_TOOL: Final = "TOOL"
OI_KIND_CHAIN: Final = "CHAIN"

# --- Metric attributes ----------------------------------------------------------------
# The workflow metrics' Prometheus label names -> their OTLP attribute names: the semantic
# conventions' names where one exists, ours otherwise.
METRIC_ATTRIBUTES: Final = {
    "workflow_id": WORKFLOW_ID,
    "workflow": WORKFLOW_NAME,
    "node": NODE_ID,
    "node_type": NODE_TYPE,
    "outcome": OUTCOME,
    "gen_ai_operation_name": GEN_AI_OPERATION_NAME,
    "gen_ai_provider_name": GEN_AI_PROVIDER_NAME,
    "gen_ai_request_model": GEN_AI_REQUEST_MODEL,
    "gen_ai_response_model": GEN_AI_RESPONSE_MODEL,
    "gen_ai_token_type": GEN_AI_TOKEN_TYPE,
    "error_type": ERROR_TYPE,
}

# Instrumentation scope of every span we build, and the semantic-conventions version its
# names follow (GenAI names of v1.41.1, the last release with GenAI in the core repository;
# error.* and exception.* are stable and unchanged up to v1.44.0).
SCOPE_NAME: Final = "orchestra-otel"
SEMCONV_VERSION: Final = "1.41.1"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
