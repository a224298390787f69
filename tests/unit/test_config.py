"""exporter/config.py: docs/design.md, "Settings" and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import Settings, load_settings
from exporter.errors import ConfigError
from exporter.schedule import ScheduleSettings

SECRET = "sk-orchestra-Zx9-very-secret-token"
KEY_ENV = {"ORCHESTRA_API_KEY": SECRET}


def _leaks(text: str) -> bool:
    """True when any 12 consecutive characters of the secret appear in the text."""
    return any(SECRET[i : i + 12] in text for i in range(len(SECRET) - 11))


def _load(
    environ: dict[str, str] | None = None,
    *,
    yaml_text: str | None = None,
    tmp_path: Path | None = None,
    flags: dict[str, object] | None = None,
    require_api_key: bool = True,
) -> Settings:
    config_path = None
    if yaml_text is not None:
        assert tmp_path is not None
        config_path = tmp_path / "orchestra.yaml"
        config_path.write_text(yaml_text, encoding="utf-8")
    return load_settings(
        config_path=config_path,
        environ=KEY_ENV if environ is None else environ,
        flags=flags,
        require_api_key=require_api_key,
    )


def _problems(
    environ: dict[str, str] | None = None,
    *,
    yaml_text: str | None = None,
    tmp_path: Path | None = None,
    flags: dict[str, object] | None = None,
) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(environ, yaml_text=yaml_text, tmp_path=tmp_path, flags=flags)
    problems = caught.value.problems
    assert problems, "a ConfigError must say what is wrong"
    for line in problems:
        assert "\n" not in line
        assert not _leaks(line)
    assert not _leaks(str(caught.value))
    return problems


# --- defaults (docs/design.md "Settings" table) --------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("base_url", "https://orchestra.arcee.ai/api/v1/workflow"),
        ("workflows", ()),
        ("poll_interval", 30),
        ("lookback", 3600),
        ("state_path", Path("./orchestra-otel.db")),
        ("capture_content", False),
        ("content_max_length", 2048),
        ("discovery_interval", 300),
        ("shard", (0, 1)),
        ("http_addr", ("127.0.0.1", 9464)),
        ("log_level", "info"),
        ("log_format", "text"),
        ("api_key", None),
        ("api_key_file", None),
        ("otlp_protocol", "grpc"),
        ("otlp_endpoint", None),
        ("api_max_response_bytes", 32 * 1024 * 1024),
        ("api_max_records", 20_000),
        ("api_max_retry_after", 300),
    ],
)
def test_defaults(field: str, expected: object) -> None:
    settings = _load({}, require_api_key=False)
    assert getattr(settings, field) == expected


def test_defaults_ignore_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRA_POLL_INTERVAL", "99")
    assert _load({}, require_api_key=False).poll_interval == 30


def test_otlp_disabled_without_endpoint() -> None:
    assert _load().otlp_enabled is False
    settings = _load({**KEY_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert settings.otlp_enabled is True
    assert settings.otlp_endpoint == "http://127.0.0.1:4317"


# --- precedence ----------------------------------------------------------------------


def test_precedence_defaults_yaml_env_flags(tmp_path: Path) -> None:
    yaml_text = "poll_interval: 5\nlookback: 60\nlog_level: debug\nlog_format: json\n"
    environ = {**KEY_ENV, "ORCHESTRA_LOOKBACK": "120", "ORCHESTRA_LOG_LEVEL": "warning"}
    flags: dict[str, object] = {"log_level": "error"}
    settings = _load(environ, yaml_text=yaml_text, tmp_path=tmp_path, flags=flags)
    assert settings.poll_interval == 5  # yaml over default
    assert settings.log_format == "json"  # yaml over default
    assert settings.lookback == 120  # env over yaml
    assert settings.log_level == "error"  # flag over env over yaml
    assert settings.discovery_interval == 300  # default


@pytest.mark.parametrize(
    ("yaml_value", "env_value", "flag_value", "expected"),
    [
        (None, None, None, 30.0),
        ("7", None, None, 7.0),
        ("7", "8", None, 8.0),
        ("7", "8", 9.0, 9.0),
        (None, None, 9.0, 9.0),
        ("7", None, 9.0, 9.0),
    ],
)
def test_precedence_table(
    tmp_path: Path,
    yaml_value: str | None,
    env_value: str | None,
    flag_value: float | None,
    expected: float,
) -> None:
    yaml_text = f"poll_interval: {yaml_value}\n" if yaml_value else ""
    environ = dict(KEY_ENV)
    if env_value:
        environ["ORCHESTRA_POLL_INTERVAL"] = env_value
    flags: dict[str, object] = {"poll_interval": flag_value} if flag_value else {}
    settings = _load(environ, yaml_text=yaml_text, tmp_path=tmp_path, flags=flags)
    assert settings.poll_interval == expected


def test_empty_env_var_does_not_override_yaml(tmp_path: Path) -> None:
    settings = _load(
        {**KEY_ENV, "ORCHESTRA_POLL_INTERVAL": ""},
        yaml_text="poll_interval: 5\n",
        tmp_path=tmp_path,
    )
    assert settings.poll_interval == 5


def test_empty_yaml_file_is_defaults(tmp_path: Path) -> None:
    assert _load(yaml_text="# nothing\n", tmp_path=tmp_path).poll_interval == 30


@pytest.mark.parametrize(
    ("env", "value", "field", "expected"),
    [
        (
            "ORCHESTRA_BASE_URL",
            "http://127.0.0.1:8080/api/",
            "base_url",
            "http://127.0.0.1:8080/api",
        ),
        ("ORCHESTRA_POLL_INTERVAL", "2.5", "poll_interval", 2.5),
        ("ORCHESTRA_LOOKBACK", "0", "lookback", 0),
        ("ORCHESTRA_STATE_PATH", "/var/lib/x.db", "state_path", Path("/var/lib/x.db")),
        ("ORCHESTRA_CAPTURE_CONTENT", "true", "capture_content", True),
        ("ORCHESTRA_CAPTURE_CONTENT", "false", "capture_content", False),
        ("ORCHESTRA_CONTENT_MAX_LENGTH", "100", "content_max_length", 100),
        ("ORCHESTRA_DISCOVERY_INTERVAL", "60", "discovery_interval", 60),
        ("ORCHESTRA_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("ORCHESTRA_LOG_FORMAT", " json ", "log_format", "json"),
        ("ORCHESTRA_HTTP_ADDR", "0.0.0.0:9000", "http_addr", ("0.0.0.0", 9000)),
        ("ORCHESTRA_HTTP_ADDR", "[::1]:9000", "http_addr", ("::1", 9000)),
        ("ORCHESTRA_HTTP_ADDR", ":9000", "http_addr", ("127.0.0.1", 9000)),
        ("ORCHESTRA_HTTP_ADDR", "off", "http_addr", None),
        ("ORCHESTRA_HTTP_ADDR", "OFF", "http_addr", None),
        ("ORCHESTRA_WORKFLOWS", "a, b", "workflows", ("a", "b")),
        ("ORCHESTRA_WORKFLOWS", "a,,b,", "workflows", ("a", "b")),
        ("ORCHESTRA_WORKFLOWS", "all", "workflows", ()),
        ("ORCHESTRA_WORKFLOWS", " all ", "workflows", ()),
        ("ORCHESTRA_SHARD", "1/3", "shard", (1, 3)),
        ("ORCHESTRA_SHARD", " 2 / 3 ", "shard", (2, 3)),
        ("ORCHESTRA_SHARD", "0/1", "shard", (0, 1)),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "otlp_protocol", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "otlp_protocol", "grpc"),
        ("ORCHESTRA_API_MAX_RESPONSE_BYTES", "1048576", "api_max_response_bytes", 1048576),
        ("ORCHESTRA_API_MAX_RECORDS", "100", "api_max_records", 100),
        ("ORCHESTRA_API_MAX_RETRY_AFTER", "60", "api_max_retry_after", 60),
    ],
)
def test_env_values(env: str, value: str, field: str, expected: object) -> None:
    assert getattr(_load({**KEY_ENV, env: value}), field) == expected


def test_yaml_lists_and_native_types(tmp_path: Path) -> None:
    yaml_text = 'workflows: [a, b]\nshard: [1, 2]\ncapture_content: true\nhttp_addr: "off"\n'
    settings = _load(yaml_text=yaml_text, tmp_path=tmp_path)
    assert settings.workflows == ("a", "b")
    assert settings.shard == (1, 2)
    assert settings.capture_content is True
    assert settings.http_addr is None


def test_yaml_bare_off_disables_http(tmp_path: Path) -> None:
    # Regression: YAML 1.1 reads a bare `off` as False, which was rejected.
    assert _load(yaml_text="http_addr: off\n", tmp_path=tmp_path).http_addr is None


# --- the API key ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [f"{SECRET}\n", f"  {SECRET} \n\n", f"\t{SECRET}"])
def test_api_key_file_whitespace_stripped(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(content, encoding="utf-8")
    settings = _load({"ORCHESTRA_API_KEY_FILE": str(key_file)})
    assert settings.api_key_value() == SECRET
    assert settings.api_key is None


def test_api_key_from_env() -> None:
    assert _load().api_key_value() == SECRET


def test_api_key_and_file_both_set_is_an_error(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET, encoding="utf-8")
    problems = _problems({**KEY_ENV, "ORCHESTRA_API_KEY_FILE": str(key_file)})
    assert len(problems) == 1
    assert "not both" in problems[0]


def test_api_key_and_file_both_set_names_the_keys(tmp_path: Path) -> None:
    # Regression: the line used to say "configuration:" instead of naming the keys.
    key_file = tmp_path / "key"
    key_file.write_text(SECRET, encoding="utf-8")
    problems = _problems({**KEY_ENV, "ORCHESTRA_API_KEY_FILE": str(key_file)})
    assert "ORCHESTRA_API_KEY " in problems[0] or "ORCHESTRA_API_KEY:" in problems[0]
    assert "ORCHESTRA_API_KEY_FILE" in problems[0]


def test_api_key_and_file_conflict_reported_with_other_problems(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET, encoding="utf-8")
    environ = {**KEY_ENV, "ORCHESTRA_API_KEY_FILE": str(key_file), "ORCHESTRA_SHARD": "x"}
    problems = _problems(environ)
    assert len(problems) == 2
    assert any("not both" in line for line in problems)
    assert any(line.startswith("ORCHESTRA_SHARD: ") for line in problems)


@pytest.mark.parametrize("environ", [{}, {"ORCHESTRA_API_KEY": "   "}])
def test_missing_api_key_is_an_error(environ: dict[str, str]) -> None:
    problems = _problems(environ)
    assert len(problems) == 1
    assert problems[0].startswith("ORCHESTRA_API_KEY")
    assert "ORCHESTRA_API_KEY_FILE" in problems[0]


def test_missing_api_key_allowed_when_not_required() -> None:
    settings = _load({}, require_api_key=False)
    assert settings.api_key_value() is None


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_empty_api_key_file_is_an_error(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(content, encoding="utf-8")
    problems = _problems({"ORCHESTRA_API_KEY_FILE": str(key_file)})
    assert len(problems) == 1
    assert problems[0].startswith("ORCHESTRA_API_KEY_FILE")
    assert "empty" in problems[0]


def test_unreadable_api_key_file_is_an_error(tmp_path: Path) -> None:
    problems = _problems({"ORCHESTRA_API_KEY_FILE": str(tmp_path / "missing")})
    assert len(problems) == 1
    assert problems[0].startswith("ORCHESTRA_API_KEY_FILE")


def test_api_key_file_flag_is_named_as_flag(tmp_path: Path) -> None:
    problems = _problems({}, flags={"api_key_file": tmp_path / "missing"})
    assert problems[0].startswith("--api-key-file")


def test_api_key_never_in_repr_or_str(tmp_path: Path) -> None:
    settings = _load()
    assert not _leaks(repr(settings))
    assert not _leaks(str(settings))
    key_file = tmp_path / "key"
    key_file.write_text(SECRET, encoding="utf-8")
    from_file = _load({"ORCHESTRA_API_KEY_FILE": str(key_file)})
    assert not _leaks(repr(from_file))
    assert not _leaks(str(from_file))


def test_api_key_never_in_problems_of_bad_yaml_value(tmp_path: Path) -> None:
    # the key written where a number belongs, and the key itself of the wrong type
    yaml_text = f"poll_interval: {SECRET}\napi_key: [{SECRET}]\n"
    problems = _problems({}, yaml_text=yaml_text, tmp_path=tmp_path)
    assert any(": poll_interval:" in line for line in problems)
    assert any(": api_key:" in line for line in problems)


@pytest.mark.parametrize("yaml_text", [f'api_key: "{SECRET}\n', f"api_key: {SECRET}: x\n"])
def test_api_key_never_in_invalid_yaml_problem(tmp_path: Path, yaml_text: str) -> None:
    # Regression: PyYAML's message quotes the offending line, key included.
    config_path = tmp_path / "orchestra.yaml"
    config_path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=config_path, environ={}, require_api_key=False)
    assert not _leaks(str(caught.value))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{config_path}: ")
    assert "YAML" in caught.value.problems[0]


# --- bad values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("ORCHESTRA_SHARD", "3/3"),
        ("ORCHESTRA_SHARD", "x"),
        ("ORCHESTRA_SHARD", "0/0"),
        ("ORCHESTRA_SHARD", "-1/3"),
        ("ORCHESTRA_SHARD", "1"),
        ("ORCHESTRA_POLL_INTERVAL", "abc"),
        ("ORCHESTRA_POLL_INTERVAL", "0"),
        ("ORCHESTRA_POLL_INTERVAL", "-1"),
        ("ORCHESTRA_POLL_INTERVAL", "nan"),
        ("ORCHESTRA_POLL_INTERVAL_MIN", "0"),
        ("ORCHESTRA_POLL_INTERVAL_MIN", "-5"),
        ("ORCHESTRA_POLL_INTERVAL_MIN", "fast"),
        ("ORCHESTRA_POLL_INTERVAL_MAX", "0"),
        ("ORCHESTRA_POLL_INTERVAL_MAX", "inf"),
        ("ORCHESTRA_POLL_INTERVAL_MAX", "5m"),
        ("ORCHESTRA_POLL_ACTIVE_WINDOW", "-1"),
        ("ORCHESTRA_POLL_ACTIVE_WINDOW", "nan"),
        ("ORCHESTRA_LOOKBACK", "-1"),
        ("ORCHESTRA_CONTENT_MAX_LENGTH", "ten"),
        ("ORCHESTRA_CONTENT_MAX_LENGTH", "1.5"),
        ("ORCHESTRA_DISCOVERY_INTERVAL", "0"),
        ("ORCHESTRA_CAPTURE_CONTENT", "maybe"),
        ("ORCHESTRA_HTTP_ADDR", "localhost"),
        ("ORCHESTRA_HTTP_ADDR", "x:99999"),
        ("ORCHESTRA_HTTP_ADDR", "x:port"),
        ("ORCHESTRA_LOG_LEVEL", "loud"),
        ("ORCHESTRA_LOG_FORMAT", "xml"),
        ("ORCHESTRA_BASE_URL", "ftp://example.com"),
        ("ORCHESTRA_BASE_URL", "orchestra.arcee.ai"),
        ("ORCHESTRA_API_MAX_RESPONSE_BYTES", "32MiB"),
        ("ORCHESTRA_API_MAX_RESPONSE_BYTES", "1000"),
        ("ORCHESTRA_API_MAX_RECORDS", "99"),  # a history page holds 100
        ("ORCHESTRA_API_MAX_RETRY_AFTER", "0"),
        ("ORCHESTRA_API_MAX_RETRY_AFTER", "inf"),
    ],
)
def test_bad_env_value_names_the_variable(env: str, value: str) -> None:
    problems = _problems({**KEY_ENV, env: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{env}: ")
    assert len(problems[0]) > len(env) + 10  # says what is allowed


def test_several_bad_values_one_error_one_line_each(tmp_path: Path) -> None:
    environ = {
        **KEY_ENV,
        "ORCHESTRA_POLL_INTERVAL": "abc",
        "ORCHESTRA_SHARD": "3/3",
        "ORCHESTRA_LOG_LEVEL": "loud",
    }
    yaml_text = "lookback: -5\nbogus_key: 1\n"
    flags: dict[str, object] = {"content_max_length": "x"}
    problems = _problems(environ, yaml_text=yaml_text, tmp_path=tmp_path, flags=flags)
    assert len(problems) == 6, problems
    path = str(tmp_path / "orchestra.yaml")
    expected_prefixes = [
        "ORCHESTRA_POLL_INTERVAL: ",
        "ORCHESTRA_SHARD: ",
        "ORCHESTRA_LOG_LEVEL: ",
        "--content-max-length: ",
        f"{path}: lookback: ",
        f"{path}: bogus_key: ",
    ]
    for prefix in expected_prefixes:
        assert sum(line.startswith(prefix) for line in problems) == 1, (prefix, problems)


def test_missing_api_key_reported_with_other_problems() -> None:
    # Regression: the key was checked only once every other value was valid.
    problems = _problems({"ORCHESTRA_POLL_INTERVAL": "abc"})
    assert len(problems) == 2
    assert any(line.startswith("ORCHESTRA_API_KEY") for line in problems)


def test_unknown_yaml_key_reported(tmp_path: Path) -> None:
    problems = _problems(yaml_text="poll_intervall: 5\n", tmp_path=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'orchestra.yaml'}: poll_intervall: ")
    assert "poll_interval" in problems[0].split("poll_intervall: ", 1)[1]  # names known keys


def test_invalid_yaml_reported(tmp_path: Path) -> None:
    problems = _problems(yaml_text="poll_interval: [5\n", tmp_path=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(str(tmp_path / "orchestra.yaml"))
    assert "YAML" in problems[0]


def test_yaml_not_a_mapping_reported(tmp_path: Path) -> None:
    problems = _problems(yaml_text="- a\n- b\n", tmp_path=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(str(tmp_path / "orchestra.yaml"))


def test_missing_config_file_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=tmp_path / "nope.yaml", environ=KEY_ENV)
    assert len(caught.value.problems) == 1
    assert str(tmp_path / "nope.yaml") in caught.value.problems[0]


@pytest.mark.parametrize(
    "variable",
    [
        "OTEL_EXPORTER_OTLP_PROTOCOL",  # read for traces and logs alike: said once
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    ],
)
def test_http_json_protocol_rejected(variable: str) -> None:
    problems = _problems({**KEY_ENV, variable: "http/json"})
    assert problems == [f"{variable}: must be one of grpc, http/protobuf"]


def test_traces_protocol_wins_over_generic() -> None:
    settings = _load(
        {
            **KEY_ENV,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
    )
    assert settings.otlp_protocol == "http/protobuf"


def test_flag_problem_names_the_flag() -> None:
    problems = _problems(flags={"poll_interval": -1})
    assert len(problems) == 1
    assert problems[0].startswith("--poll-interval: ")


def test_settings_are_frozen() -> None:
    settings = _load()
    with pytest.raises(Exception, match="frozen"):
        settings.poll_interval = 1  # type: ignore[misc]


# --- hardening (issue 11): the key's shape, clear-text http, URL credentials -----------


@pytest.mark.parametrize(
    "content",
    [
        f"{SECRET}\n# rotated 2026-01-01\n",
        f"{SECRET}\nsk-orchestra-previous-key\n",
        f"Bearer {SECRET}",
        f"{SECRET}\u00e9",
        f"{SECRET}\x00",
        f"{SECRET}\x1b[2K",
    ],
    ids=["comment line", "two keys", "space", "non-ascii", "nul", "escape"],
)
def test_a_key_file_that_is_not_one_token_is_refused_without_echo(
    tmp_path: Path, content: str
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(content, encoding="utf-8")
    problems = _problems({"ORCHESTRA_API_KEY_FILE": str(key_file)})
    assert len(problems) == 1
    assert problems[0].startswith(f"ORCHESTRA_API_KEY_FILE: the file {key_file} ")
    assert "one token of visible ASCII" in problems[0]
    for line in content.splitlines():
        assert line.strip() not in problems[0]


@pytest.mark.parametrize("value", [f"{SECRET} x", f"{SECRET}\n# old", f"{SECRET}\t2"])
def test_a_key_variable_that_is_not_one_token_is_refused_without_echo(value: str) -> None:
    problems = _problems({"ORCHESTRA_API_KEY": value})
    assert problems == [f"ORCHESTRA_API_KEY: {problems[0].split(': ', 1)[1]}"]
    assert "one token of visible ASCII" in problems[0]


def test_a_key_of_every_visible_ascii_character_is_accepted(tmp_path: Path) -> None:
    key = "".join(chr(c) for c in range(0x21, 0x7F))
    key_file = tmp_path / "key"
    key_file.write_text(f"  {key}\n\n", encoding="utf-8")
    assert _load({"ORCHESTRA_API_KEY_FILE": str(key_file)}).api_key_value() == key


@pytest.mark.parametrize(
    "url",
    ["http://orchestra.example.com/api", "http://10.0.0.5:8080/api", "http://[fd00::1]/api"],
)
def test_clear_text_http_to_another_host_is_refused(url: str) -> None:
    problems = _problems({**KEY_ENV, "ORCHESTRA_BASE_URL": url})
    assert len(problems) == 1
    assert problems[0].startswith("ORCHESTRA_BASE_URL: http:// to ")
    assert "ORCHESTRA_ALLOW_INSECURE_HTTP=true" in problems[0]


def test_clear_text_http_is_named_as_written_in_yaml(tmp_path: Path) -> None:
    problems = _problems(yaml_text="base_url: http://orchestra.example.com\n", tmp_path=tmp_path)
    assert problems[0].startswith(f"{tmp_path / 'orchestra.yaml'}: base_url: http:// to ")


def test_clear_text_http_allowed_on_request_with_a_warning() -> None:
    settings = _load(
        {
            **KEY_ENV,
            "ORCHESTRA_BASE_URL": "http://orchestra.internal/api",
            "ORCHESTRA_ALLOW_INSECURE_HTTP": "true",
        }
    )
    assert settings.allow_insecure_http is True
    (warning,) = settings.warnings()
    assert "ORCHESTRA_ALLOW_INSECURE_HTTP=true" in warning and "in clear" in warning
    assert "http://orchestra.internal/api" in warning


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api",
        "http://127.8.9.10/api",
        "http://localhost:8080/api",
        "http://[::1]:8080/api",
        "https://orchestra.example.com/api",
    ],
)
def test_loopback_http_and_https_need_no_permission(url: str) -> None:
    settings = _load({**KEY_ENV, "ORCHESTRA_BASE_URL": url})
    assert settings.warnings() == []


def test_credentials_in_the_base_url_are_masked_and_redacted() -> None:
    url = "https://robot:pa%24%24word-77@orchestra.example.com/api/v1/workflow"
    settings = _load({**KEY_ENV, "ORCHESTRA_BASE_URL": url})
    assert settings.base_url == url  # the client still gets them
    assert settings.shown_base_url == "https://***@orchestra.example.com/api/v1/workflow"
    secrets = settings.secrets()
    assert SECRET in secrets
    assert "pa%24%24word-77" in secrets and "pa$$word-77" in secrets
    assert "robot:pa%24%24word-77" in secrets


def test_credentials_are_not_echoed_when_the_url_is_refused() -> None:
    problems = _problems({**KEY_ENV, "ORCHESTRA_BASE_URL": "http://robot:hunter22@example.com"})
    assert "hunter22" not in problems[0] and "robot" not in problems[0]


def test_a_url_without_credentials_is_shown_as_is() -> None:
    assert _load().shown_base_url == "https://orchestra.arcee.ai/api/v1/workflow"
    assert _load().secrets() == [SECRET]


@pytest.mark.parametrize(
    ("mode", "warned"),
    [(0o600, False), (0o400, False), (0o640, True), (0o644, True), (0o604, True), (0o666, True)],
)
def test_a_key_file_readable_by_others_is_warned_about(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET, encoding="utf-8")
    key_file.chmod(mode)
    warnings = _load({"ORCHESTRA_API_KEY_FILE": str(key_file)}).warnings()
    assert bool(warnings) == warned, warnings
    if warned:
        assert str(key_file) in warnings[0] and f"{mode:04o}" in warnings[0]
        assert not _leaks(warnings[0])


# --- the poll schedule (README "Polling") --------------------------------------------------


def test_the_schedule_defaults_to_a_fixed_pace_while_busy_and_a_five_minute_idle_cap() -> None:
    settings = _load()
    assert (settings.poll_interval_min, settings.poll_interval_max) == (None, None)
    assert settings.poll_active_window == 300
    assert settings.schedule == ScheduleSettings(
        interval_s=30.0, min_interval_s=30.0, max_interval_s=300.0, active_window_s=300.0
    )


def test_an_interval_longer_than_the_default_cap_polls_at_a_fixed_pace() -> None:
    schedule = _load({**KEY_ENV, "ORCHESTRA_POLL_INTERVAL": "600"}).schedule
    assert (schedule.interval_s, schedule.min_interval_s, schedule.max_interval_s) == (
        600.0,
        600.0,
        600.0,
    )


def test_the_schedule_variables_are_read_from_every_source(tmp_path: Path) -> None:
    environ = {
        **KEY_ENV,
        "ORCHESTRA_POLL_INTERVAL": "10",
        "ORCHESTRA_POLL_INTERVAL_MIN": "2.5",
        "ORCHESTRA_POLL_ACTIVE_WINDOW": "0",
    }
    yaml_text = "poll_interval_max: 3600\npoll_interval_min: 9\n"
    flags: dict[str, object] = {"poll_active_window": "45"}
    settings = _load(environ, yaml_text=yaml_text, tmp_path=tmp_path, flags=flags)
    assert settings.schedule == ScheduleSettings(
        interval_s=10.0, min_interval_s=2.5, max_interval_s=3600.0, active_window_s=45.0
    )


def test_max_equal_to_the_interval_is_accepted_and_turns_the_back_off_off() -> None:
    environ = {**KEY_ENV, "ORCHESTRA_POLL_INTERVAL": "20", "ORCHESTRA_POLL_INTERVAL_MAX": "20"}
    schedule = _load(environ).schedule
    assert schedule.max_interval_s == schedule.interval_s == 20.0


def test_a_min_interval_longer_than_the_interval_is_refused() -> None:
    environ = {**KEY_ENV, "ORCHESTRA_POLL_INTERVAL": "30", "ORCHESTRA_POLL_INTERVAL_MIN": "60"}
    assert _problems(environ) == [
        "ORCHESTRA_POLL_INTERVAL_MIN: 60 is longer than ORCHESTRA_POLL_INTERVAL (30); "
        "it is the pace while a run is in flight, at most the interval"
    ]


def test_a_max_interval_shorter_than_the_default_interval_is_refused() -> None:
    assert _problems({**KEY_ENV, "ORCHESTRA_POLL_INTERVAL_MAX": "10"}) == [
        "ORCHESTRA_POLL_INTERVAL_MAX: 10 is shorter than the poll interval (default 30); "
        "it caps the idle back-off, at least the interval (equal to it: no back-off)"
    ]


def test_schedule_problems_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    environ = {
        **KEY_ENV,
        "ORCHESTRA_POLL_INTERVAL_MIN": "90",
        "ORCHESTRA_LOG_LEVEL": "loud",
    }
    yaml_text = "poll_interval: 60\n"
    flags: dict[str, object] = {"poll_interval_max": "45"}
    problems = _problems(environ, yaml_text=yaml_text, tmp_path=tmp_path, flags=flags)
    path = tmp_path / "orchestra.yaml"
    assert len(problems) == 3, problems
    assert problems[0] == (
        f"ORCHESTRA_POLL_INTERVAL_MIN: 90 is longer than {path}: poll_interval (60); "
        "it is the pace while a run is in flight, at most the interval"
    )
    assert problems[1].startswith(f"--poll-interval-max: 45 is shorter than {path}: ")
    assert problems[2].startswith("ORCHESTRA_LOG_LEVEL: ")


def test_an_unreadable_interval_is_reported_once_not_compared() -> None:
    environ = {
        **KEY_ENV,
        "ORCHESTRA_POLL_INTERVAL": "soon",
        "ORCHESTRA_POLL_INTERVAL_MIN": "60",
        "ORCHESTRA_POLL_INTERVAL_MAX": "10",
    }
    (problem,) = _problems(environ)
    assert problem.startswith("ORCHESTRA_POLL_INTERVAL: ")
