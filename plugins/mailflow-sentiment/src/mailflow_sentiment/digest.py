"""The daily digest: yesterday's and today's most negative cases, to the supervisors.

A standing timer (``sentiment.digest``, made sure of at every start) fires at
``digest.at`` on each business day of the rules' default calendar. Each supervisor
named in ``digest.to`` (per route; ``*`` for the other routes) gets one mail listing
the cases of their routes with a negative message since yesterday's midnight: number,
route, assignee, how long the customer has been waiting for an answer, and the
sentence that scored lowest. No negative case, no mail. The handler then schedules
the next digest (``replace=True``): one timer, whatever the restarts; none once the
section names nobody or the chain no longer runs the stage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from mailflow.plugin import AUTOMATIC, Host, Letter, MailWriter, Timer, TimerContext
from mailflow_sentiment import store
from mailflow_sentiment.options import DigestOptions, SentimentOptions

KIND = "sentiment.digest"
KEY = "daily"
SENTENCE_CHARS = 240


def next_digest(now: float, options: DigestOptions, host: Host) -> float:
    """The next ``options.at`` on a business day of the default calendar, after ``now``."""
    calendar = host.rules.calendars.default
    hour, minute = options.hour_minute
    local = dt.datetime.fromtimestamp(now, calendar.zone)
    today = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if today > local and calendar.is_business_day(local.date()):
        return today.timestamp()
    return calendar.next_business_day_at(local, dt.time(hour, minute)).timestamp()


def timer(now: float, options: SentimentOptions, host: Host) -> Timer:
    return Timer(KIND, next_digest(now, options.digest, host), KEY)


def recipients(lines: Sequence[store.DigestLine],
               to: dict[str, str]) -> dict[str, list[store.DigestLine]]:
    """Supervisor -> the lines of their routes (``*``: the routes nobody else has)."""
    found: dict[str, list[store.DigestLine]] = {}
    for line in lines:
        address = to.get(line.route) or to.get("*")
        if address:
            found.setdefault(address, []).append(line)
    return found


def waited(since: float | None, now: float) -> str:
    if since is None:
        return "answered"
    minutes = max(0, int(now - since) // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m"


def body(lines: Sequence[store.DigestLine], now: float, since_day: dt.date) -> str:
    """The digest's text: one block per case, most negative first."""
    blocks = [f"Customers whose mail read as negative since {since_day:%A %d %B}"
              f" ({len(lines)} case{'s' if len(lines) > 1 else ''}), most negative first.\n"]
    for line in lines:
        sentence = " ".join(line.sentence.split())
        if len(sentence) > SENTENCE_CHARS:
            sentence = sentence[:SENTENCE_CHARS - 1] + "…"
        blocks.append(f"{line.case_number}  score {line.score:.2f}\n"
                      f"  route: {line.route or '-'}   assignee: {line.assignee or '-'}"
                      f"   waiting: {waited(line.waiting_since, now)}"
                      f"{'   (closed)' if line.status == 'closed' else ''}\n"
                      f"  \"{sentence}\"\n")
    return "\n".join(blocks)


async def send_digest(ctx: TimerContext) -> None:
    """Each supervisor's digest, then the next one."""
    options: SentimentOptions = ctx.options or SentimentOptions()
    assert ctx.host is not None
    now = ctx.clock.now()
    zone = ctx.host.rules.calendars.default.zone
    yesterday = dt.datetime.fromtimestamp(now, zone).date() - dt.timedelta(days=1)
    since = dt.datetime.combine(yesterday, dt.time(0), zone).timestamp()
    if options.digest.to:
        lines = await ctx.store.run_read(lambda tx: store.most_negative(tx, since, now))
        hostname = ctx.host.settings.smtp.hostname
        writer = MailWriter(hostname)
        for address, theirs in recipients(lines, options.digest.to).items():
            shown = theirs[:options.digest.limit]
            letter = Letter(f"mailflow@{hostname}", [address],
                            f"Unhappy customers: {len(theirs)} case"
                            f"{'s' if len(theirs) > 1 else ''} since yesterday",
                            body(shown, now, yesterday))
            ctx.queue_mail(writer.write(letter, kind="sentiment-digest", profile=AUTOMATIC,
                                        now=now).mail)
    if options.digest.to and "sentiment" in ctx.host.rules.chain:  # else: no more digests
        ctx.schedule_timer(timer(now, options, ctx.host), replace=True)
