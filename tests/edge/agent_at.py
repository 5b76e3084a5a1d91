"""Run the agent's command line in this process with the box's clock moved (time-machine), for tests.

    python tests/edge/agent_at.py OFFSET CLOCK_FILE run -c agent.yaml

The wall clock of this process (``time.time``, ``datetime.now``: what an RTC-less box boots to) reads
the true time plus OFFSET seconds and ticks on; the monotonic clocks are untouched, as on a real box.
Writing another offset into CLOCK_FILE steps the clock again while the agent runs (an NTP step). The
cloud, served by the test's own process, keeps the true time.
"""

import sys
import threading
import time
from pathlib import Path

import time_machine

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    offset, clock_file, argv = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    real = time_machine.escape_hatch.time.time  # the true time, while travelling
    traveller = time_machine.travel(time.time() + offset, tick=True)
    coordinates = traveller.start()

    def follow_the_clock_file():
        seen = None
        while True:
            try:
                text = clock_file.read_text().strip()
            except OSError:
                text = None
            if text and text != seen:
                seen = text
                coordinates.move_to(real() + float(text), tick=True)
            time.sleep(0.1)

    threading.Thread(target=follow_the_clock_file, daemon=True).start()
    sys.path.insert(0, str(ROOT))
    from edge_agent import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
