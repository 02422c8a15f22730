"""`deepmem channels`: the per-channel configuration (``shared.channels``) from the command line.

Registered through the deepmem.commands entry point (it can ask Slack whether a channel exists).
"""

from __future__ import annotations

import click

from shared.channels import ChannelConfig, ChannelSettings, check_channel_id, check_collections, open_channel_config
from shared.cli import App, echo_json, json_option, pass_app
from shared.errors import ConfigError

__all__ = ["channels", "slack_channel_check"]


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _describe(name: str, s: ChannelSettings, missing: set[str]) -> str:
    collections = ",".join(f"{c} (missing)" if c in missing else c for c in s.collections) or "every collection"
    experts = ",".join(s.experts) or "none"
    return (f"{name:<12} {s.mode:<8} {'ephemeral' if s.ephemeral else 'in thread':<10} from {collections}; "
            f"experts: {experts}")


def slack_channel_check(settings, channel: str) -> None:
    """Ask Slack (conversations.info) whether the bot can be configured for the channel: ConfigError naming an
    unknown channel or a direct message (the same check as `/deepmem`, ``channel_problem``)."""
    import asyncio

    from slack_sdk.web.async_client import AsyncWebClient

    from .channel_check import channel_problem

    if settings.slack_bot_token is None:
        raise ConfigError("--check asks Slack whether the channel exists: it needs SLACK_BOT_TOKEN")
    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url,
                            timeout=15)
    try:
        found = asyncio.run(channel_problem(client, channel))
    except OSError as exc:
        raise ConfigError(f"cannot reach Slack to check channel {channel}: {exc}") from None
    if found is not None and found[0] == "unknown":
        raise ConfigError(found[1])
    if found is not None and found[0] == "direct_message":
        raise ConfigError(f"{channel} is a direct message: DMs use the default settings (`--default`)")


@click.group()
def channels() -> None:
    """Which collections each Slack channel answers from, and how (mention, all, off).

    DMs, /ask and channels not configured use the default settings (`set --default`).

    Example:

        deepmem channels set C0123ABCD --collections runbooks,api --mode all --experts U0123ABCD,S0456EFGH
    """


@channels.command("list")
@json_option
@pass_app
def list_(app: App, as_json: bool) -> None:
    """The default settings and every configured channel.

    Example:

        deepmem channels list --json
    """
    with open_channel_config(app.home, app.settings) as where:
        config = where.load()
    if as_json:
        echo_json(config.to_dict())
        return
    missing: set[str] = set()
    if app.settings.database_url is not None or app.home.store_path.exists():
        wanted = {c for s in [config.default, *config.channels().values()] for c in s.collections}
        missing = wanted - set(app.store(create=False).collections())
    click.echo(_describe("default", config.default, missing))
    for channel, settings in config.channels().items():
        click.echo(_describe(channel, settings, missing))


@channels.command("set")
@click.argument("channel", required=False)
@click.option("--default", "is_default", is_flag=True, help="Change the default (DMs, /ask, channels not configured).")
@click.option("--collections", help="Comma-separated collections to answer from.")
@click.option("--all-collections", is_flag=True, help="Answer from every collection.")
@click.option("--mode", type=click.Choice(["mention", "all", "off"]),
              help="mention: when mentioned; all: every question-like message; off: never.")
@click.option("--ephemeral/--no-ephemeral", default=None, help="Show answers only to the person who asked.")
@click.option("--experts", help="Comma-separated user (U…) and user group (S…) ids tagged on escalation.")
@click.option("--no-experts", is_flag=True, help="Tag nobody.")
@click.option("--check", is_flag=True, help="Ask Slack (SLACK_BOT_TOKEN) whether the channel exists.")
@json_option
@pass_app
def set_(app: App, channel: str | None, is_default: bool, collections: str | None, all_collections: bool,
         mode: str | None, ephemeral: bool | None, experts: str | None, no_experts: bool, check: bool,
         as_json: bool) -> None:
    """Configure CHANNEL (a channel id), or the default with --default. Unset options keep their value;
    a channel configured for the first time starts from the default.

    Example:

        deepmem channels set C0123ABCD --collections runbooks --mode mention --ephemeral
    """
    if is_default == (channel is not None):
        raise click.UsageError("give a CHANNEL id or --default")
    if collections is not None and all_collections or experts is not None and no_experts:
        raise click.UsageError("--collections and --all-collections (or --experts and --no-experts) exclude each other")
    if channel is not None:
        check_channel_id(channel)
        if check:
            slack_channel_check(app.settings, channel)
    wanted = () if all_collections else _names(collections)
    if wanted:
        wanted = check_collections(wanted, app.store(create=False).collections())

    def change(config: ChannelConfig) -> ChannelConfig:
        base = config.default if is_default else config.for_channel(channel)
        settings = base.changed(collections=wanted, mode=mode, ephemeral=ephemeral,
                                experts=() if no_experts else _names(experts))
        return config.with_default(settings) if is_default else config.with_channel(channel, settings)

    with open_channel_config(app.home, app.settings) as where:
        config = where.update(change)
    settings = config.default if is_default else config.for_channel(channel)
    if as_json:
        echo_json({"channel": channel or "default", **settings.to_dict()})
    else:
        click.echo(_describe(channel or "default", settings, set()))


@channels.command("unset")
@click.argument("channel")
@json_option
@pass_app
def unset(app: App, channel: str, as_json: bool) -> None:
    """Forget CHANNEL's settings: it uses the default again.

    Example:

        deepmem channels unset C0123ABCD
    """
    with open_channel_config(app.home, app.settings) as where:
        where.update(lambda config: config.without_channel(channel))
    if as_json:
        echo_json({"channel": channel, "removed": True})
    else:
        click.echo(f"{channel}: uses the default settings now")
