"""compose.yaml, checked against deepmem itself (no container engine runs here).

The file is read as Compose reads it (YAML anchors and merge keys, ``${VAR:-default}`` and
``${VAR:?error}`` interpolation, ``$$``, variables without a value passed through from the
environment); each deepmem service's environment is then loaded by deepmem's own settings and
put through the checks `deepmem serve` makes before it starts, and the health check is asked of a
real server built from those settings."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from bot.server import build_runtime, build_web_app, chat_mounted
from bot.slack_app import signing_secret
from daemon.schedule import parse_cron
from shared.cli import cli
from shared.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\$(?:\$|\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\})")
HTTP = {"POSTGRES_PASSWORD": "pg-pass_1", "SLACK_BOT_TOKEN": "xoxb-1-real", "SLACK_SIGNING_SECRET": "0123abcd"}
SOCKET_MODE = {"POSTGRES_PASSWORD": "pg-pass_1", "SLACK_BOT_TOKEN": "xoxb-1-real", "SLACK_APP_TOKEN": "xapp-1-real",
               "DEEPMEM_BOT_HOST": "127.0.0.1"}


def interpolate(value, env: dict):
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match):
        if match.group(0) == "$$":
            return "$"
        name, how, arg = match.groups()
        if env.get(name):
            return env[name]
        if how == ":?":
            raise ValueError(f"{name}: {arg}")
        return arg if how == ":-" else ""

    return VARIABLE.sub(one, value)


def compose(env: dict) -> dict:
    return interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()), env)


def container_env(service: dict, env: dict) -> dict:
    """What the container sees: a variable without a value comes from `docker compose`'s environment, if set."""
    out = {}
    for name, value in (service.get("environment") or {}).items():
        if value is None:
            if env.get(name):
                out[name] = env[name]
        else:
            out[name] = str(value)
    return out


def deepmem_services(spec: dict) -> dict:
    return {name: s for name, s in spec["services"].items() if s.get("image", "").startswith("deepmem")}


def settings_of(environment: dict, monkeypatch) -> Settings:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings()


KNOWN = {choice for field in Settings.model_fields.values() for choice in field.validation_alias.choices}


def test_every_variable_is_a_setting_and_every_secret_comes_from_the_environment():
    raw = yaml.safe_load((ROOT / "compose.yaml").read_text())
    spec = compose(HTTP)
    assert set(deepmem_services(spec)) == {"bot", "nightly"}
    for name, service in deepmem_services(spec).items():
        for variable, value in service["environment"].items():
            if variable.startswith(("DEEPMEM_", "SLACK_", "OPENAI_")):
                assert variable in KNOWN, f"{name}: {variable} is not a deepmem setting"
        for secret in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "OPENAI_API_KEY",
                       "DEEPMEM_CHAT_TOKEN"):
            written = raw["services"][name].get("environment", {}).get(secret)
            assert written is None or written.startswith("${"), f"{name}: {secret} is written in the file"
    for missing in ("POSTGRES_PASSWORD", "SLACK_BOT_TOKEN"):
        with pytest.raises(ValueError, match=missing):
            compose({k: v for k, v in HTTP.items() if k != missing})


@pytest.mark.parametrize("env", [HTTP, SOCKET_MODE], ids=["http", "socket-mode"])
def test_each_service_starts_with_its_settings(env, monkeypatch):
    spec = compose(env)
    postgres = spec["services"]["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:pg")
    for name, service in deepmem_services(spec).items():
        environment = container_env(service, env)
        settings = settings_of(environment, monkeypatch)
        for variable in environment:
            monkeypatch.delenv(variable)
        # the database every service shares: the postgres service, its user, database and password
        url = urlsplit(settings.database_url.get_secret_value())
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        assert url.username == postgres["environment"]["POSTGRES_USER"] and url.password == env["POSTGRES_PASSWORD"]
        assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        # what serve checks before it loads anything: the chat is not exposed, Slack can be verified
        chat_mounted(settings)
        if name == "bot":
            assert settings.slack_bot_token is not None
            signing_secret(settings)
            assert parse_cron(settings.retrain_cron) is None  # the replicas never train
            assert [str(p) for p in service["expose"]] == [str(settings.port)]
            assert int(service["deploy"]["replicas"]) >= 2
        else:
            assert settings.slack_bot_token is None and parse_cron(settings.retrain_cron) is not None
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD" and f"http://127.0.0.1:{settings.port}/healthz" in " ".join(check)


def test_the_proxy_reaches_the_replicas_port_and_forwards_slack():
    spec = compose(HTTP)
    bot_port = int(container_env(spec["services"]["bot"], HTTP)["DEEPMEM_PORT"])
    conf = spec["configs"]["proxy"]["content"]
    assert f"set $bot bot:{bot_port};" in conf and "$$" not in conf
    assert "location = /slack/events { proxy_pass http://$bot;" in conf
    published = spec["services"]["proxy"]["ports"][0]
    assert published.split(":")[-1] == re.search(r"listen (\d+);", conf).group(1)


def test_the_image_runs_deepmem_with_the_composed_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    entrypoint = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))
    assert entrypoint == ["deepmem"]
    assert re.search(r"^EXPOSE 8765$", dockerfile, re.M)
    assert "DEEPMEM_HOME=/data" in dockerfile and 'VOLUME ["/data"]' in dockerfile
    commands = set(cli.list_commands(click.Context(cli)))
    for name, service in deepmem_services(compose(HTTP)).items():
        assert service["command"][0] in commands, f"{name}: deepmem {service['command'][0]} is not a command"
    header = (ROOT / "compose.yaml").read_text().split("\n\n", 1)[0]
    for line in header.splitlines():  # the commands the header tells people to run
        if "docker compose run --rm nightly" in line:
            words = shlex.split(line.lstrip("# ").split("#")[0])
            assert words[words.index("nightly") + 1] in commands


async def test_the_health_check_path_is_served(store_copy, monkeypatch):
    """A server built from the bot's own settings (this test's store in place of Postgres) answers the check."""
    spec = compose(HTTP)
    environment = container_env(spec["services"]["bot"], HTTP)
    settings = settings_of(environment, monkeypatch).model_copy(
        update={"database_url": None, "home": Path(store_copy.path).parent, "host": "127.0.0.1"})
    path = urlsplit(re.search(r"'(http://[^']+)'", " ".join(spec["services"]["bot"]["healthcheck"]["test"]))
                    .group(1)).path
    runtime = build_runtime(settings)
    async with TestClient(TestServer(build_web_app(runtime))) as client:
        response = await client.get(path)
        assert response.status == 200 and (await response.json()) == {"ok": True}
        assert (await client.post("/slack/events", data=b"{}")).status == 401  # Slack's path, verified
    runtime.coordination.close()
