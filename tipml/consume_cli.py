"""`tipml consume`: the JetStream consumers that append app events to the event log.

Runs until SIGTERM or SIGINT (finishing the batch in hand, then draining the connection; a
second signal stops at once), or until --max-messages / --idle-exit. Also runs on its own as
`python -m tipml.consume_cli`, with the settings (data home, stores) from their environment
variables (service/settings.py).
"""

import asyncio
import logging
import signal
from typing import Annotated

import typer
from nats.js.errors import APIError

from service.events.consumer import ConsumeParams, ConsumeReport, run_consumers
from service.events.jetstream import NatsUnavailable
from service.settings import Settings
from tipml.cli_support import console, err, fail, validated

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def _until_signalled(params: ConsumeParams, settings: Settings) -> ConsumeReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        err.print(f"{signum.name}: finishing the batch in hand, then stopping", highlight=False)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)  # a second signal gets the default: stop now
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    return await run_consumers(params, settings, stop)


def consume(
    ctx: typer.Context,
    stream: Annotated[str, typer.Option(help="signals, feedback or all.")] = "all",
    batch: Annotated[int | None, typer.Option(help="Messages per fetch and append.")] = None,
    max_messages: Annotated[
        int | None, typer.Option(help="Stop once this many messages were handled.")
    ] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a message.")
    ] = None,
    ack_wait: Annotated[
        float | None,
        typer.Option(help="Seconds to ack a first delivery; redeliveries back off doubling."),
    ] = None,
    max_deliver: Annotated[
        int | None, typer.Option(help="Deliveries before a message goes to the dead letters.")
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="Streams NAME_<ns> on <ns>.* subjects (default: TIPML_NATS_NAMESPACE)."),
    ] = None,
    nats_url: Annotated[
        str | None, typer.Option(help="NATS server (default: TIPML_NATS_URL).")
    ] = None,
) -> None:
    """Consume signals.> and feedback.> from JetStream into the event log."""
    # Under `tipml` the app's callback has built the settings; run alone, read the env.
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    params = validated(
        ConsumeParams,
        stream=stream,
        batch=batch,
        max_messages=max_messages,
        idle_exit=idle_exit,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        # The service in jetstream mode publishes where the settings say: so do we, by default.
        namespace=settings.nats_namespace if namespace is None else namespace,
        nats_url=nats_url or settings.nats_url,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("service").setLevel(logging.INFO)
    try:
        report = asyncio.run(_until_signalled(params, settings))
    except NatsUnavailable as exc:
        fail(str(exc), code=1)
    except APIError as exc:
        # e.g. a durable consumer whose filter or policy cannot be changed in place
        fail(f"JetStream refused: {exc.description} (code {exc.err_code})", code=1)
    console.print(
        f"{report.handled} messages in {report.seconds:.1f} s -> {settings.events_location}",
        markup=False,
        soft_wrap=True,
    )
    for s in report.streams:
        console.print(
            f"  {s.stream} ({s.consumer}): {s.appended} appended, "
            f"{s.dead_lettered} dead-lettered, {s.failed_batches} failed batches "
            f"(files of writer {s.writer})",
            markup=False,
            soft_wrap=True,
        )


if __name__ == "__main__":
    typer.run(consume)
