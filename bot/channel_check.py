"""Asking Slack whether the bot can work in a configured channel (conversations.info).

Used by `/deepmem` before it configures a channel, and by `deepmem serve` at start-up for every
channel already configured (not `off`): a channel that was deleted or archived, that the bot cannot
see, or that it is not a member of (so it hears no mention there) is logged once, with what to do.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

__all__ = ["channel_problem", "check_configured_channels"]

log = logging.getLogger("deepmem.slack")


async def channel_problem(client, channel: str) -> tuple[str, str] | None:
    """(kind, what to tell an operator) when the bot cannot work in ``channel``; None when it can.
    Kinds: unknown, direct_message, archived, not_member. Errors reaching Slack propagate."""
    try:
        info = (await client.conversations_info(channel=channel)).get("channel") or {}
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else "unknown"
        return "unknown", f"unknown Slack channel {channel} ({error}: no such channel, or the bot cannot see it)"
    if info.get("is_im") or info.get("is_mpim"):
        return "direct_message", f"{channel} is a direct message: DMs use the default settings"
    if info.get("is_archived"):
        return "archived", f"{channel} is archived: nobody can ask there"
    if info.get("is_member") is False:
        return "not_member", f"the bot is not a member of {channel}, so it hears nothing there: /invite it"
    return None


async def check_configured_channels(client, config) -> list[str]:
    """Check every configured channel that is not `off`; log and return one line per problem."""
    problems = []
    for channel, settings in config.channels().items():
        if settings.mode == "off":
            continue
        try:
            found = await channel_problem(client, channel)
        except Exception as exc:  # Slack unreachable for now: not a verdict on the channels
            log.warning("cannot check the configured channels with Slack now: %s", exc)
            return problems
        if found is not None:
            line = f"channel configuration: {found[1]} (or `deepmem channels unset {channel}`)"
            log.warning("%s", line)
            problems.append(line)
    return problems
