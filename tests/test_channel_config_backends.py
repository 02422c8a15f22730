"""The channel configuration, one suite run against both stores: channels.json in the data directory,
and a row of the shared PostgreSQL database (every replica sees it)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

from shared.channels import (MAX_FILE, ChannelConfig, ChannelSettings, FileChannelConfigStore, LiveChannelConfig,
                             open_channel_config)
from shared.cli import cli
from shared.errors import ConfigError
from shared.home import Home
from .helpers.deployments import Deployment, deployment

RUNBOOKS, API = "CRUNBOOKS1", "CAPIDOCS01"


class ConfigBackend(Deployment):
    """A deployment's channel configuration; ``replica()`` opens it again, as another bot process would."""
    open = staticmethod(open_channel_config)
    def raw(self) -> str | None:
        """The stored document as it is (None: nothing stored)."""
        if self.url is None:
            path = ChannelConfig.path(self.home)
            return path.read_text(encoding="utf-8") if path.exists() else None
        from shared.database import connect

        with connect(self.url) as conn:
            return conn.execute("SELECT document FROM channels.config WHERE id = 1").fetchone()[0]

    def damage(self, text: str) -> None:
        """What a hand edit gone wrong leaves."""
        if self.url is None:
            ChannelConfig.path(self.home).write_text(text, encoding="utf-8")
            return
        from shared.database import connect

        with connect(self.url) as conn:
            conn.execute("UPDATE channels.config SET document = %s WHERE id = 1", [text])



@pytest.fixture(params=["file", "postgres"])
def config_backend(request, tmp_path, monkeypatch):
    b = deployment(ConfigBackend, request, tmp_path, monkeypatch)
    yield b
    b.close()


def test_the_factory_picks_the_store_by_the_database_url(config_backend):
    store = config_backend.replica()
    assert isinstance(store, FileChannelConfigStore) == (config_backend.name == "file")
    assert store.load() == ChannelConfig() and store.stamp() == (None if config_backend.name == "file" else 0)
    assert config_backend.raw() is None  # nothing stored until something is configured


def test_a_change_on_one_replica_is_seen_by_another_within_a_second(config_backend):
    one, other = config_backend.replica(), config_backend.replica()
    live = LiveChannelConfig(other)
    assert live.current().for_channel(RUNBOOKS).mode == "mention"
    one.update(lambda c: c.with_channel(RUNBOOKS, ChannelSettings(mode="all", experts=("UEXPERT001",))))
    start = time.monotonic()
    while live.current().for_channel(RUNBOOKS).mode != "all" and time.monotonic() - start < 3:
        time.sleep(0.05)
    seen = time.monotonic() - start
    assert live.current().for_channel(RUNBOOKS) == ChannelSettings(mode="all", experts=("UEXPERT001",))
    assert seen <= other.poll_interval + 0.3, seen
    # the replica's own change is in force at once, and the other sees it too
    live.update(lambda c: c.with_default(ChannelSettings(mode="off")))
    assert live.current().default.mode == "off" and one.load().default.mode == "off"
    assert set(one.load().channels()) == {RUNBOOKS}


def test_concurrent_changes_from_two_replicas_are_all_kept(config_backend):
    replicas = [config_backend.replica(), config_backend.replica()]
    per_replica = 15
    errors = []

    def configure(n: int, store):
        try:
            for i in range(per_replica):
                channel = f"C{n}CHANNEL{i:03d}"
                store.update(lambda c, channel=channel: c.with_channel(channel, ChannelSettings(mode="all")))
        except Exception as exc:  # reported below, with the thread's name
            errors.append((n, exc))

    threads = [threading.Thread(target=configure, args=(n, store)) for n, store in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    channels = config_backend.replica().load().channels()
    assert len(channels) == 2 * per_replica and {s.mode for s in channels.values()} == {"all"}


def test_a_damaged_document_keeps_the_last_good_one_and_is_reported_once(config_backend):
    store = config_backend.replica()
    store.update(lambda c: c.with_channel(RUNBOOKS, ChannelSettings(mode="all")))
    reports = []
    live = LiveChannelConfig(config_backend.replica(), on_error=reports.append)
    for damaged, problem in [("{not json", "is not valid JSON"),
                             ('{"channels": {"general": {}}}', "unknown Slack channel 'general'"),
                             ('{"default": {"mode": "all", "colour": "red"}}', "unknown fields colour")]:
        config_backend.damage(damaged)
        time.sleep(live.source.poll_interval + 0.05)
        for _ in range(3):
            assert live.current().for_channel(RUNBOOKS).mode == "all"
        assert problem in reports[-1] and "stays in force" in reports[-1] and "\n" not in reports[-1]
        with pytest.raises(ConfigError, match=problem):  # a change on top of it is refused, nothing written
            store.update(lambda c: c.with_channel(API, ChannelSettings(mode="off")))
        assert config_backend.raw() == damaged
        with pytest.raises(ConfigError) as caught:
            store.load()
        where = "channels.json" if config_backend.name == "file" else "the channel configuration in "
        assert where in str(caught.value) and "\n" not in str(caught.value)
    assert len(reports) == 3  # once per problem, not once per question
    config_backend.damage(json.dumps(ChannelConfig().with_channel(API, ChannelSettings(mode="off")).to_dict()))
    time.sleep(live.source.poll_interval + 0.05)
    assert live.current().channels() == {API: ChannelSettings(mode="off")}


def test_an_oversized_document_is_refused_in_both(config_backend):
    store = config_backend.replica()
    config_backend.damage(" " * (MAX_FILE + 1))
    with pytest.raises(ConfigError, match="larger than 4 MB"):
        store.load()
    config = ChannelConfig()
    for i in range(1000):  # ~4.7 kB each: more than 4 MB in all
        config = config.with_channel(f"C{i:09d}", ChannelSettings(collections=tuple(f"c{j:02d}-" + "x" * 60
                                                                                    for j in range(64))))
    config_backend.damage("{}")
    with pytest.raises(ConfigError, match="would be larger than 4 MB"):
        store.update(lambda _: config)
    assert config_backend.raw() == "{}"


def test_the_cli_changes_the_shared_configuration(config_backend):
    home = config_backend.home.root
    args = ["--home", str(home), "channels"]
    from bot.channel_commands import channels

    if "channels" not in cli.commands:
        cli.add_command(channels, "channels")
    runner = CliRunner()
    r = runner.invoke(cli, [*args, "set", RUNBOOKS, "--mode", "all", "--experts", "UEXPERT001"])
    assert r.exit_code == 0, r.output
    assert config_backend.replica().load().for_channel(RUNBOOKS) == ChannelSettings(mode="all",
                                                                                    experts=("UEXPERT001",))
    r = runner.invoke(cli, [*args, "list", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["channels"][RUNBOOKS]["mode"] == "all"
    assert runner.invoke(cli, [*args, "unset", RUNBOOKS]).exit_code == 0
    assert config_backend.replica().load().channels() == {}
    # in the scale-out mode every replica reads the database: no replica's channels.json is written
    assert (home / "channels.json").exists() == (config_backend.name == "file")
    r = runner.invoke(cli, [*args, "unset", API])
    assert r.exit_code == 1 and r.output.strip() == f"Error: channel '{API}' is not configured (it uses the default " \
                                                    f"settings)"


def test_migrate_copies_channels_json_into_the_database_once(tmp_path, pg_url):
    from shared.channels_postgres import PostgresChannelConfigStore
    from shared.migrate import MigrationError, migrate_home

    home = Home.open(tmp_path / "home")
    ChannelConfig().with_default(ChannelSettings(mode="off")).with_channel(
        RUNBOOKS, ChannelSettings(mode="all", ephemeral=True)).save(home)
    with PostgresChannelConfigStore(pg_url) as there:  # a channel configured on a replica already
        there.update(lambda c: c.with_channel(API, ChannelSettings(mode="mention")))
    first = {t.name: t for t in migrate_home(home, pg_url).tables}["channels.config"]
    assert (first.source, first.copied, first.target, first.missing) == (2, 2, 3, 0)
    second = {t.name: t for t in migrate_home(home, pg_url).tables}["channels.config"]
    assert (second.source, second.copied, second.target, second.missing) == (2, 0, 3, 0)
    with PostgresChannelConfigStore(pg_url) as there:
        config = there.load()
    assert config.default.mode == "off" and config.for_channel(RUNBOOKS).ephemeral and \
        config.for_channel(API).mode == "mention"
    ChannelConfig.path(home).write_text("{not json")
    with pytest.raises(MigrationError, match="channel configuration was not copied: .*channels.json is not valid JSON"):
        migrate_home(home, pg_url)


def test_a_database_that_goes_away_keeps_the_last_good_configuration(postgres_server, tmp_path):
    from shared.channels_postgres import PostgresChannelConfigStore

    url = postgres_server.create_database()
    now = [0.0]
    reports = []
    store = PostgresChannelConfigStore(url)
    store.update(lambda c: c.with_channel(RUNBOOKS, ChannelSettings(mode="all")))
    live = LiveChannelConfig(store, on_error=reports.append, clock=lambda: now[0])
    postgres_server.drop_database(url)  # its connections are ended with it
    for step in (1.5, 2.5, 3.5):  # asked at 1.5, then not before RETRY_AFTER (15 s) has passed
        now[0] = step
        assert live.current().for_channel(RUNBOOKS).mode == "all"
    assert len(reports) == 1 and "cannot read the channel configuration in" in reports[0]
    assert "stays in force" in reports[0] and "\n" not in reports[0]
    now[0] = 17.0  # asked again: the connection is made again, and the database is gone
    assert live.current().for_channel(RUNBOOKS).mode == "all"
    assert len(reports) == 2 and "does not exist" in reports[1] and "\n" not in reports[1]
    store.close()
