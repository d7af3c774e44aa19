"""`rmm broker`: the bundled Kafka-compatible broker (tansu) on loopback, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal

from rmm_monitor.core.settings import Settings

from .registry import command


def _arguments(p, settings: Settings) -> None:
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--partitions", type=int, default=1)


@command("broker", "start the bundled Kafka-compatible broker (tansu) on loopback", _arguments)
def run(args, settings: Settings) -> int:
    from rmm_monitor.dev.broker import Broker

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # so `finally` stops tansu, which runs in its own session
    broker = Broker(port=args.port, partitions=args.partitions).start()
    print(broker.bootstrap, flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0
