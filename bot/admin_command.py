"""`/deepmem`: workspace admins configure a channel from Slack.

    /deepmem channel show
    /deepmem channel collections runbooks,api      (or: all)
    /deepmem channel mode mention|all|off
    /deepmem channel ephemeral on|off
    /deepmem channel experts @alice @docs-team     (or: none)
    /deepmem channel reset
    /deepmem channel #other mode all               (another channel)
    /deepmem default mode mention                  (DMs, /ask and channels not configured)

Anyone may look (``show``); only workspace admins and owners (``users.info``: is_admin, is_owner)
may change anything, others are told so. A named channel is checked with ``conversations.info``;
collections with the store. Replies are ephemeral (the command's response_url). The change goes through
``LiveChannelConfig.update`` (locked, atomic; in the shared database with several replicas), the same as
`deepmem channels set`.
"""

from __future__ import annotations

import asyncio
import logging
import re

from slack_sdk.errors import SlackApiError

from shared.channels import ChannelConfig, ChannelSettings, LiveChannelConfig, check_collections, check_expert
from shared.errors import DeepmemError
from shared.qa import QAService

from . import outgoing
from .channel_check import channel_problem

__all__ = ["register_admin_command", "parse_command", "USAGE"]

log = logging.getLogger("deepmem.bot")
MAX_COMMAND = 2000
USAGE = ("Usage: `/deepmem channel show` · `/deepmem channel collections runbooks,api` (or `all`) · "
         "`/deepmem channel mode mention|all|off` · `/deepmem channel ephemeral on|off` · "
         "`/deepmem channel experts @someone @some-group` (or `none`) · `/deepmem channel reset` · "
         "`/deepmem channel #other …` for another channel · `/deepmem default …` for DMs, /ask and channels "
         "not configured")
CHANNEL_REF = re.compile(r"^<#([CG][A-Z0-9]+)(?:\|[^>]*)?>$")
ON, OFF = ("on", "yes", "true"), ("off", "no", "false")


class CommandError(DeepmemError):
    """A /deepmem command that cannot be run as given."""


def parse_command(text: str, here: str) -> tuple[str, str, list[str]]:
    """(target: a channel id or "default", action, arguments) of a /deepmem command typed in ``here``."""
    words = (text or "")[:MAX_COMMAND].split()
    if not words or words[0] in ("help", "-h", "--help"):
        raise CommandError(USAGE)
    scope, words = words[0].lower(), words[1:]
    if scope not in ("channel", "default"):
        raise CommandError(f"unknown `{scope}`. {USAGE}")
    target = "default"
    if scope == "channel":
        named = CHANNEL_REF.match(words[0]) if words else None
        if named:
            target, words = named.group(1), words[1:]
        else:
            target = here
        if target.startswith("D"):
            raise CommandError("this is a direct message: run `/deepmem channel …` in the channel, or use "
                               "`/deepmem default …` for DMs")
    if not words:
        return target, "show", []
    action, args = words[0].lower(), words[1:]
    if action not in ("show", "collections", "mode", "ephemeral", "experts", "reset"):
        raise CommandError(f"unknown setting `{action}`. {USAGE}")
    if action in ("collections", "mode", "ephemeral", "experts") and not args:
        raise CommandError(f"`{action}` needs a value. {USAGE}")
    return target, action, args


def _change(settings: ChannelSettings, action: str, args: list[str], known: list[str]) -> ChannelSettings:
    if action == "collections":
        names = [n for a in args for n in a.split(",") if n]
        if names == ["all"] and "all" not in known:
            return settings.changed(collections=())
        return settings.changed(collections=check_collections(names, known))
    if action == "mode":
        return settings.changed(mode=args[0].lower())
    if action == "ephemeral":
        value = args[0].lower()
        if value not in ON + OFF:
            raise CommandError("`ephemeral` takes on or off")
        return settings.changed(ephemeral=value in ON)
    if action == "experts":
        if [a.lower() for a in args] == ["none"]:
            return settings.changed(experts=())
        return settings.changed(experts=tuple(check_expert(a) for a in args))
    return settings


def describe(target: str, s: ChannelSettings, configured: bool = True) -> str:
    if target == "default":
        where = "The default (DMs, /ask, channels not configured)"
    else:
        where = f"<#{target}>" if re.fullmatch(r"[CG][A-Z0-9]{1,20}", target) else outgoing.escape(target)
        where += "" if configured else " (not configured: the default applies)"
    mode = {"mention": "answers when mentioned", "all": "answers every question asked in the channel",
            "off": "does not answer"}[s.mode]
    experts = " ".join(outgoing.expert_mention(e) for e in s.experts) or "nobody configured"
    return outgoing.Markup(
        f"{where}: {mode}, {'privately to the asker' if s.ephemeral else 'in the thread'}, from "
        f"{outgoing.escape(', '.join(s.collections)) if s.collections else 'every collection'}; experts: {experts}")


def register_admin_command(app, qa: QAService, channels: LiveChannelConfig, track, first_time) -> None:
    async def ack_admin(ack):
        await ack()

    async def is_admin(client, user: str) -> bool:
        info = (await client.users_info(user=user)).get("user") or {}
        return bool(info.get("is_admin") or info.get("is_owner") or info.get("is_primary_owner"))

    async def check_channel(client, channel: str) -> None:
        found = await channel_problem(client, channel)
        if found is not None and found[0] == "unknown":
            raise CommandError(f"{found[1]}: invite it first")
        if found is not None and found[0] == "direct_message":
            raise CommandError(f"{channel} is a direct message: DMs use `/deepmem default …`")

    @track
    async def run_admin(command, client, respond):
        if not await first_time(f"cmd:{command.get('trigger_id')}"):
            return
        user, here = command.get("user_id"), command.get("channel_id") or ""
        try:
            target, action, args = parse_command(command.get("text") or "", here)
            try:
                admin = action == "show" or await is_admin(client, user)  # anyone may look
            except SlackApiError as exc:
                error = exc.response.get("error") if exc.response is not None else "unknown"
                raise CommandError(f"cannot check who you are ({error}): the app needs the users:read scope") \
                    from None
            if not admin:
                raise CommandError("Only workspace admins and owners can configure deepmem. Ask one of them, or "
                                   "the operator (`deepmem channels set`).")
            if target != "default" and target != here:
                await check_channel(client, target)
            if action != "show":
                known = await asyncio.to_thread(qa.collections) if action == "collections" else []

                def change(config: ChannelConfig) -> ChannelConfig:
                    if action == "reset":
                        return config.without_channel(target) if target == "default" or \
                            config.is_configured(target) else config
                    base = config.default if target == "default" else config.for_channel(target)
                    settings = _change(base, action, args, known)
                    return config.with_default(settings) if target == "default" else \
                        config.with_channel(target, settings)

                if action == "reset" and target == "default":
                    raise CommandError("the default cannot be reset; change its settings instead")
                await asyncio.to_thread(channels.update, change)
                log.info("/deepmem by %s: %s %s", user, target, action)
            config = await asyncio.to_thread(channels.current)
            settings = config.default if target == "default" else config.for_channel(target)
            reply = describe(target, settings, target == "default" or config.is_configured(target))
        except DeepmemError as exc:
            reply = str(exc)
        await outgoing.respond(respond, text=reply)

    app.command("/deepmem")(ack=ack_admin, lazy=[run_admin])
